"""`hf-ltbm demo`: the main job end to end, offline by default.

Synthesises a clip (or takes `--audio`), runs a Qwen2-Audio-architecture model (by default a tiny random one built
in-process; `--model Qwen/Qwen2-Audio-7B-Instruct` for the real thing) with merging off and with each method, and
prints the audio tokens before/after merging, the prompt length the language model sees, prefill time, the text, the
merge map, and writes the clip, a JSONL of results and a PNG of the merge maps to `--output-dir`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backbones import backbone_for
from ..context import audio_token_merge
from ..merging import DEFAULT_WINDOW
from ..prompt import DEFAULT_PROMPT
from .common import add_model_arguments, check_durations, merge_setting, method_list, read_clip, tiny_models
from .inspect_cmd import log_mel, summary_table

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..inspection import MergeMap

HELP = "run a model with and without merging on one clip (offline: a tiny random model and a synthesised clip)"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help=HELP, description=HELP)
    add_model_arguments(parser, default=tiny_models()[0])
    parser.add_argument("--audio", type=Path, default=None, help="an audio file (default: a synthesised clip)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the synthesised clip")
    parser.add_argument("--methods", default="none,ltbm,global,pool,prune_norm", help="comma-separated settings")
    parser.add_argument("--keep-ratio", type=float, default=0.5, help="fraction of audio tokens kept, in (0, 1]")
    parser.add_argument("--window", type=int, default=None, help=f"LTBM window in slots (default: {DEFAULT_WINDOW})")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed generate() calls per setting (median)")
    parser.add_argument("--output-dir", type=Path, default=Path("hf-ltbm-demo"), help="where files are written")
    parser.add_argument("--size-aware", action="store_true", help="size-aware attention for the merged settings")
    parser.add_argument(
        "--preserve-norm",
        action="store_true",
        help="norm-preserving merging for the averaging methods among --methods",
    )
    parser.set_defaults(func=run, num_tokens=None, space="encoder", key_source="features", seed=None, option=[])


def synthesise(seconds: float, rate: int = 16000, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """A clip of distinct sound events in turn (tone, silence, noise burst, chirp, vowel-like harmonics, clicks),
    repeated to fill `seconds`, peak-normalised to 0.9. Returns the waveform and `(start_s, event)` pairs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    events = ("440 Hz tone", "silence", "noise burst", "rising chirp", "harmonic vowel", "clicks")
    total = int(seconds * rate)
    wave = np.zeros(total, dtype=np.float32)
    timeline, start, k = [], 0, 0
    while start < total:
        length = min(total - start, int(rate * rng.uniform(1.0, 2.2)))
        t = np.arange(length) / rate
        kind = events[k % len(events)]
        if kind == "440 Hz tone":
            seg = 0.4 * np.sin(2 * np.pi * 440 * t)
        elif kind == "silence":
            seg = 0.002 * rng.standard_normal(length)
        elif kind == "noise burst":
            seg = 0.3 * rng.standard_normal(length) * np.exp(-3 * t)
        elif kind == "rising chirp":
            seg = 0.4 * np.sin(2 * np.pi * (300 * t + 1200 * t**2))
        elif kind == "harmonic vowel":
            seg = sum(0.25 / h * np.sin(2 * np.pi * 140 * h * t) for h in range(1, 8)) * (1 + 0.3 * np.sin(6 * t))
        else:
            seg = np.zeros(length)
            seg[:: rate // 8] = 0.9
        wave[start : start + length] = seg
        timeline.append((start / rate, kind))
        start, k = start + length, k + 1
    return (wave * (0.9 / max(float(np.abs(wave).max()), 1e-6))).astype(np.float32), timeline


def map_legend(merge_map: MergeMap, seconds: float) -> str:
    """The legend of `ascii_map` for the first `seconds`, with the backbone's own token duration (40 ms for the
    Whisper-style encoders, 80 ms for Voxtral)."""
    ms = merge_map.seconds_per_token * 1e3
    return (
        f"merge map, first {seconds:g} s (one character per {ms:g} ms encoder token; a run of one letter is one "
        "output token that stands for those encoder tokens; '.' = dropped):"
    )


def ascii_map(merge_map: MergeMap, seconds: float) -> str:
    """One character per encoder frame of the first `seconds`: a run of one letter is one output token, '.' dropped."""
    a = merge_map.assignments[0][: int(round(seconds / merge_map.seconds_per_token))]
    return "".join("." if int(j) < 0 else _LETTERS[int(j) % len(_LETTERS)] for j in a)


def _generate(model: Any, inputs: Any, max_new_tokens: int) -> tuple[float, torch.Tensor]:
    import torch

    from ..timing import PrefillTimer

    with PrefillTimer(model) as timer, torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=[timer])
    return timer.seconds, out


def run(args: argparse.Namespace) -> int:
    from ..inspection import merge_maps
    from ..loading import load_model, load_processor, resolve_device, resolve_dtype
    from ..tiny import TINY_MODELS

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}.")
    methods = method_list(args.methods)
    settings = [merge_setting(args, m) for m in methods]
    device = resolve_device(args.device)
    processor = load_processor(args.model, None)
    rate = processor.feature_extractor.sampling_rate
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.audio is None:
        if not 0 < args.seconds:
            raise ValueError(f"--seconds must be > 0, got {args.seconds}.")
        audio, timeline = synthesise(args.seconds, rate)
        clip = args.output_dir / "clip.wav"
        import soundfile as sf

        sf.write(str(clip), audio, rate)
        check_durations([clip], processor)
        described = "synthesised: " + ", ".join(f"{kind} @{t:.1f}s" for t, kind in timeline[:6])
    else:
        clip, described = args.audio, "your file"
        audio = read_clip(clip, processor)

    model = load_model(args.model, None, device, resolve_dtype(args.dtype, device))
    print(f"model: {args.model} on {device}")
    if args.model in TINY_MODELS:
        print(
            "  RANDOM WEIGHTS, built in-process (no download): the generated text is meaningless; token counts, "
            "merge maps and timings are real.\n  For real output: hf-ltbm demo --model Qwen/Qwen2-Audio-7B-Instruct"
        )
    print(f"audio: {clip} ({len(audio) / rate:.1f} s, {described})\n")

    # Inputs per setting (the merging processor emits the merged placeholder count), then timed generate() calls
    # interleaved across settings (one warm-up round), so that the ratios are fair on a noisy machine.
    prepared = []
    for setting in settings:
        with audio_token_merge(model, setting, processor):
            inputs = backbone_for(processor).encode_audio(processor, audio, args.prompt)
            inputs = inputs.to(model.device)
            inputs["input_features"] = inputs["input_features"].to(model.dtype)
            mask = model._unit_mask(inputs)
            prepared.append((inputs, *(int(c.sum()) for c in model.audio_token_counts(mask))))
    times: list[list[float]] = [[] for _ in settings]
    outputs: list[Any] = [None] * len(settings)
    for round_ in range(args.repeats + 1):
        for i, (setting, (inputs, _, _)) in enumerate(zip(settings, prepared)):
            with audio_token_merge(model, setting, processor):
                seconds, outputs[i] = _generate(model, inputs, args.max_new_tokens)
            if round_:
                times[i].append(seconds)

    print(f"{'setting':<34}{'audio tokens':>14}{'LLM prompt':>12}{'prefill ms':>12}  text")
    records, baseline = [], None
    for setting, (inputs, before, after), seconds, out in zip(settings, prepared, times, outputs):
        prefill = statistics.median(seconds)
        prompt_len = int(inputs["input_ids"].shape[1])
        text = processor.batch_decode(out[:, prompt_len:], skip_special_tokens=True)[0].strip()
        baseline = prefill if setting is None else baseline
        name = str(setting) if setting is not None else "none"
        print(f"{name:<34}{f'{before} -> {after}':>14}{prompt_len:>12}{prefill * 1e3:>12.1f}  {text[:60]}")
        records.append(
            {
                "setting": name,
                "audio_tokens_before": before,
                "audio_tokens_after": after,
                "llm_prompt_tokens": prompt_len,
                "prefill_ms": round(prefill * 1e3, 3),
                "generated_text": text,
            }
        )
    if baseline is not None:
        speedups = ", ".join(
            f"{r['setting'].split('(')[0]} {baseline * 1e3 / r['prefill_ms']:.2f}x"
            for r in records
            if r["setting"] != "none"
        )
        print(f"\nprefill speed-up vs none (encoder + merge + LLM prefill, median of {args.repeats}): {speedups}")
        if args.model in TINY_MODELS:
            print(
                "  (the tiny model's language model costs next to nothing beside its audio encoder, so merging "
                "cannot speed it up here; a 7B language model's prefill grows with the prompt length)"
            )

    merged = [s for s in settings if s is not None]
    if merged:
        maps = merge_maps(model, processor, audio, merged)
        shown = min(4.0, len(audio) / rate)
        print("\n" + map_legend(maps[0], shown))
        for merge_map in maps:
            print(f"  {merge_map.setting.method:<12}{ascii_map(merge_map, shown)}")
        print("\n" + summary_table(maps))
        try:
            from ..plotting import plot_merge_maps

            png = plot_merge_maps(
                audio, rate, maps, args.output_dir / "merges.png", log_mel=log_mel(processor.feature_extractor, audio)
            )
            print(f"\nmerge map image: {png}")
        except ImportError as err:
            print(f"\n(no merge map image: {err})")
    results = args.output_dir / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    print(f"results: {results}")
    return 0
