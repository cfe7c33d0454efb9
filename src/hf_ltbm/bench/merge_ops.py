"""Merge-op benchmark: time and peak memory per call of every method, against a dense ToMe-style reference.

All settings run interleaved in one process on the same inputs (one warm-up round, then `repeats` rounds), so the
ratios between them are fair on a noisy machine; the table reports medians. Memory is measured in a separate,
untimed call (`PeakMemory`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch

from ..merging import merge_tokens, output_length
from .memory import PeakMemory

__all__ = [
    "NORM_SUFFIX",
    "preserve_norm_overhead",
    "dense_tome_merge",
    "merge_op_settings",
    "run_merge_ops",
    "scaling_exponents",
]


def dense_tome_merge(x: torch.Tensor, num_out: int, window: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: ToMe's bipartite soft matching written the plain dense way, run in rounds down to `num_out` tokens.

    Each round builds the full `[N/2, N/2]` cosine-similarity matrix between even (A) and odd (B) tokens (with
    `window`, pairs more than `window` slots apart are masked out of that same dense matrix), merges the `r` best A
    tokens into their best B partners by size-weighted averaging (`scatter_reduce`) and keeps the order of the
    survivors. O(N^2) time and memory whatever the window. `x [B, N, D]` (no padding). Returns `(tokens, sizes)`.
    """
    batch, n, dim = x.shape
    tokens, sizes = x.float(), torch.ones(batch, n, 1, device=x.device)
    while n > num_out:
        r = min(n - num_out, n // 2)
        a, b = tokens[:, 0::2], tokens[:, 1::2]
        sim = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).transpose(1, 2)
        if window is not None:
            slot_a = torch.arange(0, n, 2, device=x.device)[:, None]
            slot_b = torch.arange(1, n, 2, device=x.device)[None]
            sim = sim.masked_fill((slot_a - slot_b).abs() > window, float("-inf"))
        best, partner = sim.max(dim=-1)
        order = best.argsort(dim=-1, descending=True)
        merged, kept = order[:, :r], order[:, r:].sort(dim=-1).values
        sa, sb = sizes[:, 0::2], sizes[:, 1::2]
        dst = partner.gather(1, merged)[..., None]
        b_sum = (b * sb).scatter_reduce(
            1, dst.expand(-1, -1, dim), (a * sa).gather(1, merged[..., None].expand(-1, -1, dim)), "sum"
        )
        sb = sb.scatter_reduce(1, dst, sa.gather(1, merged[..., None]), "sum")
        b = b_sum / sb
        # Survivors in temporal order: kept A tokens at their even slots, B tokens at their odd slots.
        slots = torch.cat([2 * kept, 2 * torch.arange(b.shape[1], device=x.device).expand(batch, -1) + 1], dim=1)
        perm = slots.argsort(dim=1)
        tokens = torch.cat([a.gather(1, kept[..., None].expand(-1, -1, dim)), b], dim=1)
        sizes = torch.cat([sa.gather(1, kept[..., None]), sb], dim=1)
        tokens = tokens.gather(1, perm[..., None].expand(-1, -1, dim))
        sizes = sizes.gather(1, perm[..., None])
        n = tokens.shape[1]
    return tokens, sizes


#: The suffix of a setting's name in `merge_op_settings` that runs with `preserve_norm=True`.
NORM_SUFFIX = " +norm"


def preserve_norm_overhead(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (averaging method, batch, N) timed both ways: `time_ms` without and `norm_time_ms` with
    `preserve_norm`, and their ratio `norm_ratio` (medians of the same interleaved rounds)."""
    cell = {(r["method"], r["batch"], r["N"]): r for r in rows}
    out = []
    for (name, batch, n), row in cell.items():
        plain = cell.get((name.removesuffix(NORM_SUFFIX), batch, n))
        if name.endswith(NORM_SUFFIX) and plain is not None:
            out.append(
                {
                    "method": plain["method"],
                    "batch": batch,
                    "N": n,
                    "time_ms": plain["time_ms"],
                    "norm_time_ms": row["time_ms"],
                    "norm_ratio": row["time_ms"] / plain["time_ms"],
                }
            )
    return out


def merge_op_settings(windows: Sequence[int] = (1, 4, 16), reference: bool = True) -> list[tuple[str, Callable]]:
    """`(name, fn(x, scores, keep_ratio))` for every method (LTBM at each window) and the dense references."""

    def ours(method: str, **kw: Any) -> Callable:
        def call(x: torch.Tensor, scores: torch.Tensor, keep_ratio: float) -> Any:
            extra = {"scores": scores} if method in ("prune_attention", "segment_topk") else {}
            if method == "random":
                extra["generator"] = torch.Generator(device=x.device).manual_seed(0)
            return merge_tokens(x, method=method, keep_ratio=keep_ratio, **kw, **extra)

        return call

    def dense(window: Optional[int]) -> Callable:
        return lambda x, scores, keep_ratio: dense_tome_merge(
            x, output_length(x.shape[1], keep_ratio=keep_ratio), window
        )

    settings = [(f"ltbm w={w}", ours("ltbm", window=w)) for w in windows] + [("global", ours("global"))]
    settings += [(m, ours(m)) for m in ("pool", "prune_norm", "prune_attention", "segment_topk", "random")]
    # the averaging methods again with norm-preserving merging (`NORM_SUFFIX`), timed in the same rounds
    averaging = [(f"ltbm w={w}", "ltbm", {"window": w}) for w in windows] + [
        ("global", "global", {}),
        ("pool", "pool", {}),
    ]
    settings += [(name + NORM_SUFFIX, ours(method, preserve_norm=True, **kw)) for name, method, kw in averaging]
    if reference:
        settings += [(f"dense ToMe w={w}", dense(w)) for w in windows] + [("dense ToMe global", dense(None))]
    return settings


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_merge_ops(
    sizes: Sequence[int] = (250, 750, 3000, 15000),
    batches: Sequence[int] = (1, 8),
    dim: int = 1280,
    windows: Sequence[int] = (1, 4, 16),
    keep_ratio: float = 0.25,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    reference_max_elements: int = 8 * 15000 * 15000 // 4,
    progress: Optional[Callable[[str], None]] = None,
) -> list[dict[str, Any]]:
    """One row per (method, batch, N): `time_ms` (median), `time_ms_per_clip`, `peak_mb` (extra tensor memory of one
    call) and `peak_mb_per_clip`. Dense references are skipped where their similarity matrix would exceed
    `reference_max_elements` floats (rows then say `skipped`)."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    rows = []
    for batch in batches:
        for n in sizes:
            x = torch.randn(batch, n, dim, generator=g).to(device, dtype)
            scores = torch.rand(batch, n, generator=g).to(device)
            settings = [
                (name, fn)
                for name, fn in merge_op_settings(windows)
                if not name.startswith("dense") or batch * (n // 2) ** 2 <= reference_max_elements
            ]
            times: dict[str, list[float]] = {name: [] for name, _ in settings}
            for round_ in range(repeats + 1):
                for name, fn in settings:
                    _sync(device)
                    start = time.perf_counter()
                    fn(x, scores, keep_ratio)
                    _sync(device)
                    if round_:
                        times[name].append(time.perf_counter() - start)
            for name, fn in settings:
                with PeakMemory(device) as mem:
                    fn(x, scores, keep_ratio)
                ms = statistics.median(times[name]) * 1e3
                rows.append(
                    {
                        "method": name,
                        "batch": batch,
                        "N": n,
                        "D": dim,
                        "time_ms": ms,
                        "time_ms_per_clip": ms / batch,
                        "peak_mb": mem.peak_bytes / 2**20,
                        "peak_mb_per_clip": mem.peak_bytes / 2**20 / batch,
                    }
                )
            if progress:
                progress(f"merge ops: batch {batch}, N={n} done")
    return rows


def scaling_exponents(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """Least-squares slope of log(time) against log(N) per (method, batch): ~1 linear, ~2 quadratic."""
    out = {}
    for key in sorted({(r["method"], r["batch"]) for r in rows}):
        pts = [(math.log(r["N"]), math.log(r["time_ms"])) for r in rows if (r["method"], r["batch"]) == key]
        if len(pts) < 2:
            continue
        mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
        out[key] = sum((px - mx) * (py - my) for px, py in pts) / sum((px - mx) ** 2 for px, _ in pts)
    return out
