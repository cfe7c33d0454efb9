"""`hf-ltbm inspect AUDIO --model ID`: which encoder frames each merged token stands for, per method, as a PNG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import CLIError, add_merge_arguments, add_model_arguments, merge_setting, method_list, read_clip

if TYPE_CHECKING:
    import numpy as np

    from ..inspection import MergeMap

HELP = "show which encoder frames each merged token stands for, one lane per method (PNG + summary)"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("inspect", help=HELP, description=HELP)
    parser.add_argument("audio", help="one audio file")
    add_model_arguments(parser)
    add_merge_arguments(parser, methods=True)
    parser.add_argument("--view", choices=("mel", "waveform"), default="mel", help="what to draw above the lanes")
    parser.add_argument("--output", type=Path, default=None, help="PNG path (default: <audio name>_merges.png)")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON lines")
    parser.set_defaults(func=run)


def log_mel(extractor: Any, audio: np.ndarray) -> np.ndarray:
    """The processor's log-mel features of the whole clip, `[mel_bins, frames]` (30 s windows side by side)."""
    import numpy as np

    chunks = [audio[i : i + extractor.n_samples] for i in range(0, len(audio), extractor.n_samples)]
    feats = extractor(chunks, sampling_rate=extractor.sampling_rate, return_tensors="np")["input_features"]
    return np.concatenate(list(feats), axis=-1)


def summary_table(maps: list[MergeMap]) -> str:
    """One row per setting: tokens before -> after, mean segment length, longest merge span, non-contiguous share."""
    summaries = [merge_map.summary() for merge_map in maps]
    width = max([36, *(len(str(s["setting"])) + 2 for s in summaries)])
    lines = [f"{'setting':<{width}}{'tokens':>14}{'mean span s':>13}{'max span s':>12}{'non-contig':>12}"]
    for s in summaries:
        tokens = f"{s['tokens_before']} -> {s['tokens_after']}"
        lines.append(
            f"{s['setting']:<{width}}{tokens:>14}{s['mean_span_s']:>13.3f}{s['max_span_s']:>12.2f}"
            f"{s['non_contiguous']:>12.1%}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..inspection import merge_maps
    from ..loading import load_model, load_processor, resolve_device, resolve_dtype

    methods = method_list(args.methods)
    if "none" in methods:
        raise CLIError("--methods: 'none' merges nothing, so it has no merge map; leave it out.")
    settings = [merge_setting(args, method) for method in methods]
    path = Path(args.audio)
    device = resolve_device(args.device)
    processor = load_processor(args.model, None)
    audio = read_clip(path, processor)
    model = load_model(args.model, None, device, resolve_dtype(args.dtype, device))
    maps = merge_maps(model, processor, audio, settings)
    if args.json:
        for merge_map in maps:
            print(json.dumps(merge_map.summary()))
    else:
        print(f"{path} ({len(audio) / processor.feature_extractor.sampling_rate:.2f} s)")
        print(summary_table(maps))
    from ..plotting import plot_merge_maps

    output = args.output or Path(f"{path.stem}_merges.png")
    rate = processor.feature_extractor.sampling_rate
    mel = log_mel(processor.feature_extractor, audio) if args.view == "mel" else None
    plot_merge_maps(audio, rate, maps, output, view=args.view, log_mel=mel, title=f"{path.name}: merged tokens")
    if not args.json:
        print(f"merge map written to {output}")
    return 0
