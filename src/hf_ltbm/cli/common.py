"""What the subcommands share: merge-setting and model arguments, option parsing, audio checks, errors.

Building the parser imports neither torch nor transformers (`hf-ltbm --help` stays quick): what the help lists comes
from light modules (the method registry, the backbones' declarations, the config's constants), and the subcommands
import models, loading and the harness inside their `run`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..backbones import BACKBONES, max_audio_seconds
from ..config import KEY_SOURCES, MERGE_SPACES, AudioTokenMergeConfig
from ..merging import DEFAULT_WINDOW, available_methods, get_method_class

if TYPE_CHECKING:
    from ..audio import AudioInputError

EXIT_INPUT = 1  # an audio input cannot be used
EXIT_USAGE = 2  # bad command line: unknown option, bad merge setting, unknown or unsupported model


class CLIError(Exception):
    """An error the command line reports as one message, with the exit code it ends with."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------------------- arguments
def tiny_models() -> list[str]:
    """The tiny random models `--model` takes (`hf_ltbm.tiny.TINY_MODELS`), from the backbones' declarations."""
    return [backbone.tiny_name for backbone in BACKBONES.values()]


def add_model_arguments(parser: argparse.ArgumentParser, *, default: Optional[str] = None) -> None:
    parser.add_argument(
        "--model",
        default=default,
        required=default is None,
        help=f"hub id or local folder of a {' / '.join(b.display_name for b in BACKBONES.values())} checkpoint, or "
        f"{' / '.join(tiny_models())} (random weights, built offline)" + (f" (default: {default})" if default else ""),
    )
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available, else CPU), 'cpu', 'cuda:0', ...")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="weights dtype; 'auto' is bfloat16 on CUDA, float32 elsewhere",
    )


def add_merge_arguments(parser: argparse.ArgumentParser, *, methods: bool = False) -> None:
    """Adds `--merge` (or `--methods` for several), `--keep-ratio`, `--num-tokens`, `--window` and the rest."""
    names = ", ".join(["none", *available_methods()])
    if methods:
        parser.add_argument(
            "--methods",
            default="ltbm,global,pool,prune_norm",
            help=f"comma-separated methods among {names}",
        )
    else:
        parser.add_argument("--merge", default="ltbm", metavar="METHOD", help=f"one of {names} (default: ltbm)")
    parser.add_argument("--keep-ratio", type=float, default=None, help="fraction of audio tokens kept, in (0, 1]")
    parser.add_argument("--num-tokens", type=int, default=None, help="audio tokens kept per clip (or 30 s window)")
    parser.add_argument("--window", type=int, default=None, help=f"LTBM window in slots (default: {DEFAULT_WINDOW})")
    parser.add_argument("--space", default="encoder", help=f"where to merge: {', '.join(MERGE_SPACES)}")
    parser.add_argument("--key-source", default="features", help=f"what merging compares: {', '.join(KEY_SOURCES)}")
    parser.add_argument("--seed", type=int, default=None, help="seed of the 'random' method")
    parser.add_argument(
        "--size-aware",
        action="store_true",
        help="size-aware attention: the language model adds log(size) to the logits of merged audio keys",
    )
    parser.add_argument(
        "--preserve-norm",
        action="store_true",
        help="norm-preserving merging: a merged token keeps its members' mean norm (averaging methods)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further method option, e.g. num_segments=10 (repeatable; VALUE is read as JSON when it parses)",
    )


def option_dict(pairs: list[str]) -> dict[str, Any]:
    """`--option KEY=VALUE` pairs as a dict (VALUE read as JSON when it parses); a pair without `=` raises."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"--option expects KEY=VALUE, got {pair!r}.")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def merge_setting(args: argparse.Namespace, method: Optional[str] = None) -> Optional[AudioTokenMergeConfig]:
    """The `AudioTokenMergeConfig` the arguments describe (`None` for method 'none'); bad values raise `CLIError`."""
    method = args.merge if method is None else method
    chosen = method_list(args.methods) if hasattr(args, "methods") else [args.merge]
    for flag, value, owner in (("--window", args.window, "ltbm"), ("--seed", args.seed, "random")):
        if value is not None and owner not in chosen:
            raise CLIError(f"{flag} {value} only applies to method '{owner}', which is not among {chosen}.")
    preserve_norm = bool(getattr(args, "preserve_norm", False))
    if preserve_norm and hasattr(args, "methods"):  # several methods: the flag is for the averaging ones among them
        averaging = [m for m in chosen if m in available_methods() and get_method_class(m).averages]
        if not averaging:
            raise CLIError(
                f"--preserve-norm applies to the averaging methods (e.g. ltbm, global, pool); none among {chosen}."
            )
        preserve_norm = method in averaging
    if method == "none":
        return None
    fields: dict[str, Any] = dict(
        preserve_norm=preserve_norm,
        method=method,
        keep_ratio=args.keep_ratio,
        num_tokens=args.num_tokens,
        space=args.space,
        key_source=args.key_source,
        options=option_dict(args.option),
        size_aware_attention=args.size_aware,
    )
    if method == "ltbm" and args.window is not None:
        fields["window"] = args.window
    if method == "random":
        fields["seed"] = 0 if args.seed is None else args.seed
    try:
        return AudioTokenMergeConfig(**fields)
    except (ValueError, TypeError) as err:
        raise CLIError(f"bad merge setting: {err}") from err


def int_list(text: str) -> list[int]:
    """`"1,4,16"` -> `[1, 4, 16]` (an argparse `type`: bad numbers raise `ValueError`)."""
    return [int(v) for v in text.split(",") if v.strip()]


def float_list(text: str) -> list[float]:
    """`"0.75,0.5"` -> `[0.75, 0.5]` (an argparse `type`: bad numbers raise `ValueError`)."""
    return [float(v) for v in text.split(",") if v.strip()]


def method_list(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise CLIError("--methods is empty; pass e.g. --methods ltbm,global,pool")
    return methods


def check_durations(paths: list[Path], processor: Any) -> dict[Path, float]:
    """Durations of the files (read from their headers); empty, undecodable and too long files raise `CLIError`."""
    import soundfile as sf

    limit = max_audio_seconds(processor)
    durations = {}
    for path in paths:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError) as err:
            raise CLIError(f"Could not decode audio file {str(path)!r}: {err}", EXIT_INPUT) from err
        if info.frames == 0:
            raise CLIError(f"Audio file {str(path)!r} is empty (0 samples).", EXIT_INPUT)
        seconds = info.frames / info.samplerate
        if seconds > limit:
            raise CLIError(
                f"Audio file {str(path)!r} is {seconds:.1f} s long; this model takes at most {limit:g} s per clip. "
                f"Cut it into pieces of at most {limit:g} s (e.g. `sox in.wav out.wav trim 0 {limit:g} : newfile : "
                f"restart`), or use Audio Flamingo 3, which takes up to 600 s.",
                EXIT_INPUT,
            )
        durations[path] = seconds
    return durations


def read_clip(path: Path, processor: Any) -> Any:
    """One audio file as a waveform at the processor's rate, after the same checks as `check_durations`; problems
    raise `CLIError` with the input exit code."""
    from ..audio import AudioInputError, load_audio

    try:
        if not path.exists():
            raise AudioInputError(f"Audio file {str(path)!r} does not exist.")
        check_durations([path], processor)
        return load_audio(path, processor.feature_extractor.sampling_rate)
    except AudioInputError as err:
        raise input_error(err) from err


def input_error(err: AudioInputError) -> CLIError:
    return CLIError(str(err), EXIT_INPUT)
