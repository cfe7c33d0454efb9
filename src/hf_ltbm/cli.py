"""The `hf-ltbm` command line. Subcommands are registered in `_COMMANDS`; each one builds on the public API only."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Optional

import torch

from .config import AudioTokenMergeConfig
from .merging import available_methods
from .merging.diagnostics import merge_stats

__all__ = ["main"]


def synthetic_features(
    seconds: float = 30.0, dim: int = 1280, rate: int = 25, seed: int = 0
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Encoder-like features of a synthetic clip: a sequence of "events" (each a random direction held for a random
    duration, with slow drift and noise), so that neighbouring tokens are similar within an event.

    Returns `(features [1, N, dim], events)` with `N = seconds * rate` and the `(start, stop)` token span of each
    event.
    """
    g = torch.Generator().manual_seed(seed)
    n = int(round(seconds * rate))
    bounds = [0]
    while bounds[-1] < n:
        bounds.append(min(n, bounds[-1] + int(torch.randint(3, 2 * rate, (1,), generator=g))))
    events = list(zip(bounds[:-1], bounds[1:]))
    feats = torch.empty(n, dim)
    for start, stop in events:
        base = torch.randn(dim, generator=g)
        drift = torch.randn(dim, generator=g) * 0.3
        t = torch.linspace(0, 1, stop - start)[:, None]
        feats[start:stop] = base + t * drift + 0.35 * torch.randn(stop - start, dim, generator=g)
    return feats[None], events


def _demo(args: argparse.Namespace) -> int:
    feats, events = synthetic_features(args.seconds, seed=args.seed)
    n = feats.shape[1]
    print(
        f"Synthetic 25 Hz encoder features: {n} tokens x {feats.shape[2]} dims, {len(events)} events "
        f"(random data standing in for a {args.seconds:g} s clip; no model is loaded)."
    )
    print(f"{'setting':<34}{'tokens':>7}{'cos to input':>14}{'mean span s':>13}{'max span s':>12}{'time ms':>10}")
    scores = feats.norm(dim=-1)  # stands in for encoder attention in this demo
    for name in args.methods:
        cfg = AudioTokenMergeConfig(
            method=name, keep_ratio=args.keep_ratio, **({"seed": 0} if name == "random" else {})
        )
        kwargs = {"scores": scores} if cfg.requires_scores else {}
        cfg.merge(feats, **kwargs)  # warm-up
        start = time.perf_counter()
        out = cfg.merge(feats, **kwargs)
        elapsed = (time.perf_counter() - start) * 1e3
        stats = merge_stats(feats[0], out.tokens[0, : int(out.lengths[0])], out.assignment[0])
        print(
            f"{str(cfg):<34}{int(out.lengths[0]):>7}{stats['cosine']:>14.3f}{stats['mean_span'] / 25:>13.2f}"
            f"{stats['max_span'] / 25:>12.2f}{elapsed:>10.2f}"
        )
    if args.show_map:
        out = AudioTokenMergeConfig(keep_ratio=args.keep_ratio).merge(feats)
        print("\nLTBM merge map (output token <- input tokens):")
        a = out.assignment[0]
        for j in range(min(int(out.lengths[0]), args.show_map)):
            members = (a == j).nonzero().flatten().tolist()
            print(f"  {j:4d} <- {members}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-ltbm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="merge synthetic audio features with every method and compare them")
    demo.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of tokens kept, in (0, 1]")
    demo.add_argument("--seconds", type=float, default=30.0, help="clip length to simulate (25 tokens per second)")
    demo.add_argument(
        "--methods",
        type=lambda s: s.split(","),
        default=["ltbm", "global", "pool", "prune_norm", "segment_topk", "random"],
        help=f"comma-separated methods among {available_methods()}",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--show-map", type=int, default=8, metavar="K", help="print the first K merged groups")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `hf-ltbm` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"hf-ltbm {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
