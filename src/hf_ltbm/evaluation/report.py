"""`hf-ltbm report runs/`: the finished runs under a folder as tables (Markdown + CSV) and plots (PNG).

- `results.csv`: tidy, one row per (model, task, run, metric) with the value and its relative change against the
  uncompressed run (`none`) of the same model and task; efficiency figures (audio tokens kept, prefill per item, peak
  memory) are metrics too.
- `results_wide.csv`: one row per (model, method, setting), one column per `task/metric`.
- `results.md`: per model a summary (each task's main metric with its change vs no compression) and per task all
  metrics with the efficiency figures; unavailable metrics are listed with their reasons.
- `<model>_metric_vs_keep_ratio.png`: one panel per task, the main metric against the keep ratio, one line per method
  (LTBM once per window; size-aware variants dashed) and the uncompressed score as a horizontal line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from transformers.utils import logging

from ..tables import markdown_table, write_csv
from .asr import ASR_METRICS
from .captioning import CAPTION_METRICS
from .tasks import TASKS

logger = logging.get_logger(__name__)

__all__ = ["Run", "collect_runs", "plot_runs", "write_report"]

_EFFICIENCY = {
    "audio_tokens_kept": "audio_tokens_kept",
    "prefill_s_per_item": "prefill_s_per_item",
    "peak_memory_mb": "peak_memory_bytes_max",
}


@dataclass
class Run:
    """One finished run, read from its `metrics.json`."""

    model: str
    task: str
    name: str
    method: str
    keep_ratio: Optional[float]
    window: Optional[int]
    size_aware: bool
    options: dict[str, Any]
    metrics: dict[str, float]
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    path: Optional[Path] = None
    space: str = "encoder"
    key_source: str = "features"
    preserve_norm: bool = False

    @property
    def variant(self) -> list[str]:
        """The non-default `space` / `key_source` of the run (sweep variants that sit side by side in one `--out`)."""
        parts = [] if self.space == "encoder" else [f"space={self.space}"]
        return parts + ([] if self.key_source == "features" else [f"keys={self.key_source}"])

    @property
    def identity(self) -> tuple:
        """Every setting field that makes a run's folder distinct: two runs with the same identity are one row."""
        return (
            self.model,
            self.method,
            self.keep_ratio,
            self.window,
            self.size_aware,
            json.dumps(self.options, sort_keys=True),
            self.space,
            self.key_source,
            self.preserve_norm,
        )

    @property
    def setting(self) -> str:
        """Human-readable setting, e.g. `keep 0.5, w 4, size-aware`."""
        if self.method == "none":
            return "-"
        parts = [f"keep {self.keep_ratio:g}"]
        if self.window is not None:
            parts.append(f"w {self.window}")
        parts += [f"{k}={v}" for k, v in sorted(self.options.items())]
        parts += self.variant
        if self.size_aware:
            parts.append("size-aware")
        if self.preserve_norm:
            parts.append("norm-preserving")
        return ", ".join(parts)

    @property
    def series(self) -> str:
        """The plot line this run belongs to (method, LTBM window, size-aware, norm-preserving)."""
        label = self.method if self.window is None else f"{self.method} (w={self.window})"
        label += "".join(f" {k}={v}" for k, v in sorted(self.options.items()))
        label += "".join(f" {part}" for part in self.variant)
        return (
            label + (" + size-aware" if self.size_aware else "") + (" + norm-preserving" if self.preserve_norm else "")
        )


def collect_runs(root: Path) -> list[Run]:
    """Every finished run (a folder with `metrics.json`) under `root`, sorted by model, task, method and setting."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"`runs` folder {str(root)!r} does not exist.")
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        metrics = dict(data["metrics"])
        efficiency = data.get("efficiency", {})
        for name, key in _EFFICIENCY.items():
            value = efficiency.get(key)
            if value is not None:
                metrics[name] = value / 2**20 if name == "peak_memory_mb" else value
        runs.append(
            Run(
                model=data["model"],
                task=data["task"],
                name=data["run"],
                method=data["method"],
                keep_ratio=data.get("keep_ratio"),
                window=data.get("window"),
                size_aware=bool(data.get("size_aware")),
                preserve_norm=bool(data.get("preserve_norm")),
                options=data.get("options") or {},
                metrics=metrics,
                unavailable=data.get("unavailable") or {},
                notes=list(data.get("notes") or []),
                path=path.parent,
                **_variant_fields(data, path.parent),
            )
        )
    if not runs:
        raise ValueError(f"No finished runs (folders with metrics.json) under {str(root)!r}.")
    return sorted(runs, key=_sort_key)


def _variant_fields(metrics: dict[str, Any], folder: Path) -> dict[str, str]:
    """`space` and `key_source` of a run: from `metrics.json`, or (runs written before it recorded them) from the merge
    setting in the run's `config.json`."""
    fields = {name: metrics[name] for name in ("space", "key_source") if metrics.get(name) is not None}
    config_path = folder / "config.json"
    if len(fields) < 2 and config_path.exists():
        setting = json.loads(config_path.read_text(encoding="utf-8")).get("audio_token_merge") or {}
        fields = {**{n: setting[n] for n in ("space", "key_source") if setting.get(n) is not None}, **fields}
    return fields


def _sort_key(run: Run) -> tuple:
    return (
        run.model,
        run.method != "none",
        run.method,
        run.window or 0,
        json.dumps(run.options, sort_keys=True),
        run.space,
        run.key_source,
        run.size_aware,
        run.preserve_norm,
        -(run.keep_ratio or 1.0),
        run.task,
    )


def _baselines(runs: Sequence[Run]) -> dict[tuple[str, str], Run]:
    return {(r.model, r.task): r for r in runs if r.method == "none"}


def _relative(value: float, base: Optional[float]) -> Optional[float]:
    if base is None or base == 0 or value is None or math.isnan(value):
        return None
    return (value - base) / abs(base)


_GROUP_ORDER = ["sound", "music", "speech", "easy", "medium", "hard"]


def _change(run: Run, metric: str, baselines: dict[tuple[str, str], Run]) -> Optional[float]:
    """Relative change of `run`'s `metric` against the uncompressed run of the same model and task (None without
    one)."""
    base = baselines.get((run.model, run.task))
    return _relative(run.metrics.get(metric), None if base is None else base.metrics.get(metric))


def _primary(task: str, metrics: dict[str, float]) -> str:
    """The metric a task is summarised by (the first one for a task this version does not know)."""
    return TASKS[task].primary_metric if task in TASKS else next(iter(metrics))


def _metric_order(task: str, names: Sequence[str]) -> list[str]:
    preferred = list(CAPTION_METRICS) + list(ASR_METRICS) + ["accuracy"]
    preferred += [f"accuracy/{group}" for group in _GROUP_ORDER]
    ordered = [m for m in preferred if m in names]
    ordered += sorted(m for m in names if m not in ordered and m not in _EFFICIENCY)
    return ordered + [m for m in _EFFICIENCY if m in names]


def tidy_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (model, task, run, metric): value and relative change vs the same model and task's `none` run."""
    baselines = _baselines(runs)
    rows = []
    for run in runs:
        for metric in _metric_order(run.task, list(run.metrics)):
            rows.append(
                {
                    "model": run.model,
                    "task": run.task,
                    "run": run.name,
                    "method": run.method,
                    "keep_ratio": run.keep_ratio if run.keep_ratio is not None else 1.0,
                    "window": run.window,
                    "size_aware": run.size_aware,
                    "options": json.dumps(run.options, sort_keys=True) if run.options else "",
                    "space": run.space,
                    "key_source": run.key_source,
                    "preserve_norm": run.preserve_norm,
                    "metric": metric,
                    "value": run.metrics[metric],
                    "relative_change_vs_none": _change(run, metric, baselines),
                }
            )
    return rows


def _key(run: Run) -> tuple:
    return run.identity


def wide_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (model, method, setting), one column per `task/metric` (and `task/metric rel` vs no compression)."""
    baselines = _baselines(runs)
    table: dict[tuple, dict[str, Any]] = {}
    columns: list[str] = []
    for run in runs:
        row = table.setdefault(
            _key(run),
            {
                "model": run.model,
                "method": run.method,
                "setting": run.setting,
                "keep_ratio": run.keep_ratio or 1.0,
                "window": run.window,
                "size_aware": run.size_aware,
                "options": json.dumps(run.options, sort_keys=True) if run.options else "",
                "space": run.space,
                "key_source": run.key_source,
                "preserve_norm": run.preserve_norm,
            },
        )
        for metric in _metric_order(run.task, list(run.metrics)):
            for column, value in (
                (f"{run.task}/{metric}", run.metrics[metric]),
                (f"{run.task}/{metric} rel", _change(run, metric, baselines)),
            ):
                row[column] = value
                if column not in columns:
                    columns.append(column)
    return [{**row, **{c: row.get(c) for c in columns}} for row in table.values()]


def _fmt(value: Any, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if metric == "audio_tokens_kept":
        return f"{100 * value:.1f}%"
    if metric == "prefill_s_per_item":
        return f"{1e3 * value:.1f} ms"
    if metric == "peak_memory_mb":
        return f"{value:.0f} MB"
    if metric.startswith("accuracy") or metric in ASR_METRICS:  # percentages
        return f"{value:.2f}"
    if value != 0 and abs(value) < 1e-4:  # e.g. BLEU-4 with no 4-gram match: pycocoevalcap's smoothing floor
        return f"{value:.1e}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _fmt_rel(rel: Optional[float]) -> str:
    return "" if rel is None else f" ({100 * rel:+.1f}%)"


def markdown(runs: Sequence[Run]) -> str:
    """The Markdown report (see the module docstring)."""
    baselines = _baselines(runs)
    out = [
        "# Evaluation results",
        "",
        "Relative change against no compression (`none`) of the same model in brackets.",
        "",
    ]
    for model in dict.fromkeys(r.model for r in runs):
        mine = [r for r in runs if r.model == model]
        tasks = list(dict.fromkeys(r.task for r in mine))
        out += [f"## {model}", ""]
        primary = {t: _primary(t, next(r.metrics for r in mine if r.task == t)) for t in tasks}
        header = ["method", "setting"] + [f"{t} {primary[t]}" for t in tasks]
        rows: dict[tuple, list[str]] = {}
        for run in mine:
            row = rows.setdefault(_key(run), [run.method, run.setting] + ["-"] * len(tasks))
            metric = primary[run.task]
            rel = _change(run, metric, baselines) if run.method != "none" else None
            row[2 + tasks.index(run.task)] = _fmt(run.metrics.get(metric), metric) + _fmt_rel(rel)
        out += [markdown_table(header, list(rows.values()), text_columns=2), ""]
        for task in tasks:
            task_runs = [r for r in mine if r.task == task]
            metrics = _metric_order(task, list(dict.fromkeys(m for r in task_runs for m in r.metrics)))
            out += [f"### {model}: {task}", ""]
            body = []
            for run in task_runs:
                cells = [run.method, run.setting]
                for metric in metrics:
                    compared = run.method != "none" and metric not in _EFFICIENCY
                    rel = _change(run, metric, baselines) if compared else None
                    cells.append(_fmt(run.metrics.get(metric), metric) + _fmt_rel(rel))
                body.append(cells)
            out += [markdown_table(["method", "setting", *metrics], body, text_columns=2), ""]
            reasons = {k: v for r in task_runs for k, v in r.unavailable.items()}
            for metric, reason in reasons.items():
                out.append(f"- {metric} unavailable: {reason}")
            notes = list(dict.fromkeys(note for r in task_runs for note in r.notes))
            out += [f"- Note: {note}" for note in notes]
            if reasons or notes:
                out.append("")
    return "\n".join(out)


def plot_runs(runs: Sequence[Run], out_dir: Path) -> list[Path]:
    """One PNG per model: a panel per task with the main metric against the keep ratio, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for model in dict.fromkeys(r.model for r in runs):
        mine = [r for r in runs if r.model == model]
        tasks = list(dict.fromkeys(r.task for r in mine))
        fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            metric = _primary(task, next(r.metrics for r in mine if r.task == task))
            task_runs = [r for r in mine if r.task == task and metric in r.metrics]
            for run in task_runs:
                if run.method == "none":
                    ax.axhline(run.metrics[metric], color="black", linestyle=":", label="none (no compression)")
            series: dict[str, list[Run]] = {}
            for run in task_runs:
                if run.method != "none":
                    series.setdefault(run.series, []).append(run)
            for label, points in series.items():
                points = sorted(points, key=lambda r: r.keep_ratio)
                ax.plot(
                    [p.keep_ratio for p in points],
                    [p.metrics[metric] for p in points],
                    marker="s" if points[0].preserve_norm else "o",
                    linestyle="--" if points[0].size_aware else "-",
                    label=label,
                )
            ax.set_title(task)
            ax.set_xlabel("keep ratio (audio tokens kept)")
            ax.set_ylabel(f"{metric} (%, lower is better)" if metric in ASR_METRICS else metric)
            ax.invert_xaxis()
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{model}: {', '.join(tasks)} vs keep ratio")
        fig.tight_layout()
        path = Path(out_dir) / f"{_safe(model)}_metric_vs_keep_ratio.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^\w.-]+", "_", name.strip("/")) or "model"


def write_report(root: Path, out_dir: Optional[Path] = None, *, plots: bool = True) -> dict[str, Path]:
    """Writes `results.md`, `results.csv`, `results_wide.csv` and the plots for the runs under `root` into `out_dir`
    (default: `root`); returns the written paths by kind."""
    runs = collect_runs(root)
    out_dir = Path(out_dir or root)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "markdown": out_dir / "results.md",
        "csv": out_dir / "results.csv",
        "wide_csv": out_dir / "results_wide.csv",
    }
    written["markdown"].write_text(markdown(runs), encoding="utf-8")
    write_csv(tidy_rows(runs), written["csv"])
    write_csv(wide_rows(runs), written["wide_csv"])
    if plots:
        for i, path in enumerate(plot_runs(runs, out_dir)):
            written[f"plot{i}"] = path
    return written
