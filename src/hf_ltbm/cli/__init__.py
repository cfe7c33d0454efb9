"""The `hf-ltbm` command line.

Subcommands live in their own modules, each with `add_parser(subparsers)`; `_COMMANDS` lists them (add `eval`
there). Exit codes: 0 success, 1 an audio input cannot be used, 2 bad command line (unknown option, bad merge
setting, unknown or unsupported model).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Optional

from .common import EXIT_USAGE, CLIError

__all__ = ["main"]

_COMMANDS = ("demo", "generate", "inspect_cmd", "bench", "eval_cmd", "report_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-ltbm",
        description="Training-free audio-token compression (LTBM and baselines) for audio-language models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `hf-ltbm` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"hf-ltbm {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except (ValueError, TypeError) as err:
        print(f"hf-ltbm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
