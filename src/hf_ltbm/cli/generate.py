"""`hf-ltbm generate AUDIO... --model ID`: text for audio files, with the audio tokens saved and the prefill time."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from ..prompt import DEFAULT_PROMPT
from .common import add_merge_arguments, add_model_arguments, check_durations, input_error, merge_setting

HELP = "generate text for audio files (captions, answers) with a merged audio prompt"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("generate", help=HELP, description=HELP)
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, mp3, ogg, ...) or folders of them")
    add_model_arguments(parser)
    parser.add_argument(
        "--prompt", default=DEFAULT_PROMPT, help=f"instruction for every clip (default: {DEFAULT_PROMPT!r})"
    )
    add_merge_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=4, help="clips per generate() call (left-padded)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--output", type=Path, default=None, help="also write one JSON record per clip to this file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList

    from ..audio import AudioInputError, find_audio_files
    from ..loading import load_model, load_processor, resolve_device, resolve_dtype
    from ..pipeline import AudioTextToTextPipeline
    from ..timing import PrefillTimer

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}.")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}.")
    setting = merge_setting(args)
    try:
        files = find_audio_files(args.audio)
    except AudioInputError as err:
        raise input_error(err) from err
    device = resolve_device(args.device)
    processor = load_processor(args.model, setting)
    durations = check_durations(files, processor)
    model = load_model(args.model, setting, device, resolve_dtype(args.dtype, device))
    pipe = AudioTextToTextPipeline(model=model, processor=processor)
    sink = open(args.output, "w", encoding="utf-8") if args.output else None
    prefill_times, records = [], []
    try:
        with tqdm(total=len(files), unit="clip", disable=args.no_progress, file=sys.stderr) as bar:
            for start in range(0, len(files), args.batch_size):
                batch = files[start : start + args.batch_size]
                with PrefillTimer(model) as timer:
                    try:
                        results = pipe(
                            [str(p) for p in batch],
                            text=args.prompt,
                            batch_size=len(batch),
                            generate_kwargs={
                                "max_new_tokens": args.max_new_tokens,
                                "do_sample": args.do_sample,
                                "logits_processor": LogitsProcessorList([timer]),
                            },
                        )
                    except AudioInputError as err:
                        raise input_error(err) from err
                prefill_times.append(timer.seconds)
                for path, (result, *_) in zip(batch, results):
                    record = {
                        "audio": str(path),
                        "duration_s": round(durations[path], 3),
                        "prompt": args.prompt,
                        "generated_text": result["generated_text"],
                        "audio_tokens_before": result["audio_tokens_before"],
                        "audio_tokens_after": result["audio_tokens_after"],
                        "prefill_s": round(timer.seconds, 6),
                        "batch_size": len(batch),
                        "model": args.model,
                        "audio_token_merge": None if setting is None else setting.to_dict(),
                    }
                    records.append(record)
                    bar.write(
                        f"{path} ({record['audio_tokens_before']} -> {record['audio_tokens_after']} audio tokens, "
                        f"batch prefill {timer.seconds * 1e3:.1f} ms)\n  {record['generated_text']}"
                    )
                    if sink:
                        sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                        sink.flush()
                bar.update(len(batch))
    finally:
        if sink:
            sink.close()
    before = sum(r["audio_tokens_before"] for r in records)
    after = sum(r["audio_tokens_after"] for r in records)
    print(
        f"{len(records)} clip(s), setting {setting or 'none'}: {before} -> {after} audio tokens "
        f"({after / before:.1%} kept); median batch prefill {statistics.median(prefill_times) * 1e3:.1f} ms"
        + (f"; records in {args.output}" if args.output else "")
    )
    return 0
