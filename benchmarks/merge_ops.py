"""Time per call of every merge method at several sequence lengths, and the LTBM / Global Merge ratio.

Usage: python benchmarks/merge_ops.py [--sizes 750 3000 15000] [--dim 1280] [--batch 1] [--repeats 7]

All methods run interleaved in one process on the same inputs; the table reports the median over repeats after a
warm-up call, so ratios between methods are fair even on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import hf_ltbm


def _settings(windows: list[int]) -> list[tuple[str, dict]]:
    return (
        [(f"ltbm w={w}", {"method": "ltbm", "window": w}) for w in windows]
        + [("global", {"method": "global"}), ("pool", {"method": "pool"}), ("prune_norm", {"method": "prune_norm"})]
        + [("prune_attention", {"method": "prune_attention"}), ("segment_topk", {"method": "segment_topk"})]
        + [("random", {"method": "random"})]
    )


def run(sizes: list[int], dim: int, batch: int, repeats: int, keep_ratio: float, windows: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        x = torch.randn(batch, n, dim, generator=torch.Generator().manual_seed(n))
        scores = torch.rand(batch, n)
        settings = _settings(windows)
        times: dict[str, list[float]] = {name: [] for name, _ in settings}
        for rep in range(repeats + 1):  # the first pass is warm-up
            for name, kwargs in settings:
                extra = {"scores": scores} if kwargs["method"] in ("prune_attention", "segment_topk") else {}
                if kwargs["method"] == "random":
                    extra["generator"] = torch.Generator().manual_seed(0)
                start = time.perf_counter()
                hf_ltbm.merge_tokens(x, keep_ratio=keep_ratio, **kwargs, **extra)
                if rep:
                    times[name].append(time.perf_counter() - start)
        for name, _ in settings:
            rows.append({"N": n, "method": name, "ms": 1e3 * statistics.median(times[name])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[750, 3000, 15000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep-ratio", type=float, default=0.25)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 3, 16])
    args = parser.parse_args()
    rows = run(args.sizes, args.dim, args.batch, args.repeats, args.keep_ratio, args.windows)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, D={args.dim}, batch={args.batch}, "
        f"keep_ratio={args.keep_ratio}, median of {args.repeats}"
    )
    names = list(dict.fromkeys(r["method"] for r in rows))
    print("| method | " + " | ".join(f"N={n} ms" for n in args.sizes) + " |")
    print("|---|" + "---:|" * len(args.sizes))
    table = {(r["method"], r["N"]): r["ms"] for r in rows}
    for name in names:
        print(f"| {name} | " + " | ".join(f"{table[name, n]:.2f}" for n in args.sizes) + " |")
    for w in args.windows:
        ratios = ", ".join(f"N={n}: {table[f'ltbm w={w}', n] / table['global', n]:.3f}" for n in args.sizes)
        print(f"LTBM (w={w}) / Global time ratio: {ratios}")


if __name__ == "__main__":
    main()
