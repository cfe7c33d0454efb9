"""Tables (Markdown + CSV), plots (PNG) and target checks for the benchmark results."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..tables import markdown_table, write_csv
from .merge_ops import NORM_SUFFIX, preserve_norm_overhead, scaling_exponents

__all__ = ["environment", "merge_ops_markdown", "end_to_end_markdown", "plot_results", "write_csv", "targets"]


def environment(device: torch.device) -> dict[str, Any]:
    """Device and software versions, recorded next to every result."""
    import transformers

    from ..version import __version__

    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "hf_ltbm": __version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def merge_ops_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Per batch size: time per clip (ms) and peak memory per clip (MB) for each method and N, the scaling exponent,
    and LTBM's speed against Global Merge and the dense reference."""
    slopes = scaling_exponents(rows)
    out = []
    for batch in sorted({r["batch"] for r in rows}):
        sub = [r for r in rows if r["batch"] == batch]
        sizes = sorted({r["N"] for r in sub})
        methods = list(dict.fromkeys(r["method"] for r in sub))
        cell = {(r["method"], r["N"]): r for r in sub}
        header = ["method"] + [f"N={n} ms" for n in sizes] + [f"N={n} MB" for n in sizes] + ["time ~ N^k"]
        body = []
        for m in methods:
            times = [f"{cell[m, n]['time_ms_per_clip']:.2f}" if (m, n) in cell else "skipped" for n in sizes]
            mems = [f"{cell[m, n]['peak_mb_per_clip']:.1f}" if (m, n) in cell else "skipped" for n in sizes]
            body.append([m, *times, *mems, f"{slopes.get((m, batch), float('nan')):.2f}"])
        out.append(f"Batch {batch} (per clip; D = {sub[0]['D']}):\n\n" + markdown_table(header, body))
    overhead = preserve_norm_overhead(rows)
    if overhead:
        header = ["method", "batch", "N", "plain ms", "preserve_norm ms", "ratio"]
        body = [
            [
                r["method"],
                str(r["batch"]),
                str(r["N"]),
                f"{r['time_ms']:.2f}",
                f"{r['norm_time_ms']:.2f}",
                f"{r['norm_ratio']:.2f}x",
            ]
            for r in overhead
        ]
        out.append(
            "Norm-preserving merging, time with / without `preserve_norm` (medians):\n\n"
            + markdown_table(header, body)
        )
    return "\n\n".join(out)


def end_to_end_markdown(rows: Sequence[dict[str, Any]]) -> str:
    header = [
        "setting",
        "audio tok",
        "prompt",
        "encoder ms",
        "merge ms",
        "prefill ms",
        "speed-up (ideal)",
        "of ideal",
        "TTFT ms",
        "decode tok/s",
        "peak MB",
        "KV MB",
        "KV exact",
        "merge / prefill",
        "merge / unmerged prefill",
    ]
    body = [
        [
            r["setting"],
            str(r["audio_tokens"]),
            str(r["prompt_tokens"]),
            f"{r['encoder_ms']:.1f}",
            f"{r['merge_ms']:.2f}",
            f"{r['prefill_ms']:.1f}",
            f"{r['prefill_speedup']:.2f}x ({r['ideal_speedup']:.2f}x)",
            f"{r['speedup_vs_ideal']:.0%}",
            f"{r['ttft_ms']:.1f}",
            f"{r['decode_tok_s']:.1f}",
            f"{r['peak_mb']:.0f}",
            f"{r['kv_mb']:.1f}",
            "yes" if r["kv_exact"] else "NO",
            f"{r['merge_overhead']:.2%}",
            f"{r['merge_vs_unmerged_prefill']:.2%}",
        ]
        for r in rows
    ]
    return markdown_table(header, body)


def targets(merge_rows: Sequence[dict[str, Any]], e2e_rows: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's four targets, each with its measured value and whether it is met."""
    lines = []
    if e2e_rows:
        merged = [r for r in e2e_rows if r["merge_ms"] > 0]
        worst = max((r["merge_overhead"] for r in merged), default=float("nan"))
        worst_base = max((r["merge_vs_unmerged_prefill"] for r in merged), default=float("nan"))
        lines.append(
            f"merge overhead <= 1% of LLM prefill at N=750: worst {worst_base:.2%} of the unmerged prefill it cuts "
            f"-> {'met' if worst_base <= 0.01 else 'MISSED'}; worst {worst:.2%} of the merged (shorter) prefill -> "
            + ("met" if worst <= 0.01 else "MISSED")
        )
        for k in (0.5, 0.25):
            row = next((r for r in e2e_rows if r["keep_ratio"] == k), None)
            if row:
                ok = row["speedup_vs_ideal"] >= 0.9
                lines.append(
                    f"prefill speed-up >= 90% of ideal at keep {k}: {row['prefill_speedup']:.2f}x of "
                    f"{row['ideal_speedup']:.2f}x = {row['speedup_vs_ideal']:.0%} -> {'met' if ok else 'MISSED'}"
                )
        exact = all(r["kv_exact"] for r in e2e_rows)
        lines.append(f"KV cache after prefill holds exactly text + M tokens: {'met' if exact else 'MISSED'}")
    if merge_rows:
        n = max(r["N"] for r in merge_rows)
        cell = {(r["method"], r["batch"]): r for r in merge_rows if r["N"] == n}
        for batch in sorted({b for _, b in cell}):
            for ref_name in ("dense ToMe global", "global"):
                ref = cell.get((ref_name, batch))
                if ref is None:
                    continue
                ltbm = (m for m, b in cell if m.startswith("ltbm") and not m.endswith(NORM_SUFFIX) and b == batch)
                for name in sorted(ltbm):
                    row = cell[(name, batch)]
                    ratio = ref["time_ms"] / row["time_ms"]
                    lines.append(
                        f"{name} at N={n}, batch {batch}: {ratio:.1f}x faster than {ref_name} "
                        f"(peak {row['peak_mb']:.0f} MB vs {ref['peak_mb']:.0f} MB) -> "
                        + ("met" if ratio >= 10 else "MISSED")
                    )
    return lines


def _save(plt: Any, fig: Any, ax: Any, path: Path, legend_size: Any = None) -> Path:
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_results(merge_rows: Sequence[dict[str, Any]], e2e_rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """`merge_ops_time.png` (time vs N per method, log-log, batch 1), `prefill_speedup.png` (speed-up vs keep ratio
    with the ideal line) and `memory.png` (KV cache and peak memory vs keep ratio). Returns the files written."""
    from ..plotting import _pyplot

    plt = _pyplot()
    written = []
    if merge_rows:
        fig, ax = plt.subplots(figsize=(7, 5))
        batch = min(r["batch"] for r in merge_rows)
        for m in dict.fromkeys(r["method"] for r in merge_rows):
            pts = sorted(
                (r["N"], r["time_ms_per_clip"]) for r in merge_rows if r["method"] == m and r["batch"] == batch
            )
            ax.plot(*zip(*pts), marker="o", linestyle="--" if m.startswith("dense") else "-", label=m)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="N (audio tokens)",
            ylabel="ms per clip",
            title=f"Merge op, batch {batch}",
        )
        written.append(_save(plt, fig, ax, out / "merge_ops_time.png", legend_size=7))
    # Size-aware rows (`--size-aware`) repeat the merged keep ratios: the curves show the plain settings.
    plain = [r for r in e2e_rows if "size_aware_attention=True" not in r["setting"]]
    if plain:
        keep = [r["keep_ratio"] for r in plain]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.plot(keep, [r["ideal_speedup"] for r in plain], "k--", label="ideal (token ratio)")
        ax.plot(keep, [r["prefill_speedup"] for r in plain], "o-", label="LLM prefill")
        ax.plot(keep, [r["ttft_speedup"] for r in plain], "s-", label="time to first token")
        ax.set(xlabel="keep ratio", ylabel="speed-up vs no merging", title=f"Prefill speed-up ({plain[0]['scale']})")
        ax.invert_xaxis()
        written.append(_save(plt, fig, ax, out / "prefill_speedup.png"))
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.plot(keep, [r["kv_mb"] for r in plain], "o-", label="KV cache after prefill")
        ax.plot(keep, [r["peak_mb"] for r in plain], "s-", label="peak tensor memory of generate()")
        ax.set(xlabel="keep ratio", ylabel="MB", title="Memory")
        ax.invert_xaxis()
        written.append(_save(plt, fig, ax, out / "memory.png"))
    return written


def write_environment(env: dict[str, Any], out: Path) -> None:
    (out / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
