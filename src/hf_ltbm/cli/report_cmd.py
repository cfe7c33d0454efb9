"""`hf-ltbm report runs/`: tables (Markdown + CSV) and plots of the finished evaluation runs under a folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import CLIError

HELP = "tables (Markdown, CSV) and plots of the evaluation runs under a folder"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("report", help=HELP, description=HELP)
    parser.add_argument("runs", type=Path, help="the --out folder of hf-ltbm eval")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: the runs folder)")
    parser.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import write_report

    try:
        written = write_report(args.runs, args.out, plots=not args.no_plots)
    except ValueError as err:
        raise CLIError(str(err)) from err
    print(written["markdown"].read_text(encoding="utf-8"))
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0
