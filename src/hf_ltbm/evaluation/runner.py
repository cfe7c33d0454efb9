"""Runs evaluations: one folder per (model, task, method, settings), resumable, data-parallel with accelerate.

A run folder `<out>/<model>/<task>/<run name>/` holds

- `config.json`: the resolved configuration (model, task, data source, prompt, merge setting, generation, versions);
- `predictions.jsonl`: one line per item (`id`, `prediction`, what scoring needs, audio tokens before/after);
- `batches.jsonl`: one line per generate() call (`rank`, item ids, audio tokens, `prefill_s`, `generate_s`,
  `peak_memory_bytes`);
- `metrics.json`: the task metrics, unavailable metrics with reasons, and the efficiency summary.

While a run is in progress each process appends to `predictions.rank<r>.jsonl` / `batches.rank<r>.jsonl` after every
batch. A run with `metrics.json` is finished and skipped; a run without it resumes from the items its partial files
already hold (any number of processes may resume it). Work is split with
`PartialState().split_between_processes(items, apply_padding=True)`; the padding repeats items, so results are
de-duplicated by id after `gather_object`, and only the main process scores (CIDEr-D needs the whole set) and writes.

The sweep's points (`RunSpec`, `expand_sweep`, `model_slug`) are defined in `hf_ltbm.evaluation.sweep` and importable
from here too.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList
from transformers.utils import logging

from ..backbones import max_audio_seconds
from ..bench.memory import PeakMemory
from ..context import audio_token_merge
from ..pipeline import AudioTextToTextPipeline
from ..timing import PrefillTimer
from .data import EvalItem, check_unique_ids, read_item_audio
from .sweep import SIZE_AWARE_CHOICES, RunSpec, expand_sweep, model_slug  # noqa: F401  (SIZE_AWARE_CHOICES: the CLI's)
from .tasks import EvalTask

logger = logging.get_logger(__name__)

__all__ = ["RunResult", "RunSpec", "evaluate", "expand_sweep", "model_slug", "read_jsonl", "rescore"]

# config.json fields that define a run: a finished or partial run whose values differ is not silently reused
_IDENTITY = ("model", "task", "source", "prompt", "audio_token_merge", "generation", "limit", "dtype")


# ------------------------------------------------------------------------------------------------------ files
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a torn last line (an interrupted write) is ignored."""
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines) - 1:
                logger.warning(f"{path}: line {number + 1} is not valid JSON and is ignored.")
    return records


def _append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    _append_jsonl(tmp, records)
    tmp.replace(path)


def _end_with_newline(path: Path) -> None:
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("\n")


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------------- runs
@dataclass
class RunResult:
    """What `evaluate` did for one run: its folder, its metrics file's content, whether it was skipped (finished
    earlier), and how many items an interrupted earlier attempt had already done."""

    spec: RunSpec
    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    resumed_items: int = 0


def _generation_defaults(model: Any) -> dict[str, Any]:
    """The checkpoint's own generation settings that differ from transformers' defaults (they still apply)."""
    config = getattr(model, "generation_config", None)
    return {} if config is None else json.loads(json.dumps(config.to_diff_dict(), default=str))


def _resolved_config(
    model: Any, model_name: str, task: EvalTask, spec: RunSpec, generation: dict, limit: Optional[int], extra: dict
) -> dict[str, Any]:
    import transformers

    from ..version import __version__

    setting = spec.setting()
    return {
        "model": model_name,
        "task": task.name,
        "source": task.resolved_source,
        "prompt": task.prompt_template(model.config.model_type),
        "method": spec.method,
        "run": spec.name,
        "audio_token_merge": None if setting is None else setting.to_dict(),
        "generation": generation,
        "limit": limit,
        "dataset": task.dataset_info(),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "model_generation_config": _generation_defaults(model),
        **extra,
        "versions": {
            "hf_ltbm": __version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def _check_same_run(path: Path, config: dict[str, Any]) -> None:
    old_path = path / "config.json"
    if not old_path.exists():
        return
    old = json.loads(old_path.read_text(encoding="utf-8"))
    changed = [k for k in _IDENTITY if old.get(k) != config.get(k)]
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} there, {config.get(k)!r} now" for k in changed)
        raise ValueError(
            f"Run folder {str(path)!r} holds a run with other settings ({details}). Use another --out folder, or "
            "--overwrite to replace it."
        )


def _shard(state: Any, items: list[EvalItem]) -> list[EvalItem]:
    """This process's share of `items` (padded with repeats so that every process gets as many)."""
    if not items or state.num_processes == 1:
        return items
    with state.split_between_processes(items, apply_padding=True) as shard:
        return list(shard)


def _batches(items: list[EvalItem], size: int) -> Iterable[list[EvalItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run_batch(
    pipe: AudioTextToTextPipeline, task: EvalTask, batch: list[EvalItem], generation: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rate = pipe.processor.feature_extractor.sampling_rate
    max_seconds = max_audio_seconds(pipe.processor)  # clips beyond the backbone's limit are cut, and counted
    device = next(pipe.model.parameters()).device
    inputs, truncated = [], 0
    for item in batch:
        wave, cut = read_item_audio(item, rate, max_seconds)
        truncated += cut
        inputs.append({"audio": wave, "text": task.prompt_for(item, pipe.model.config.model_type)})
    start = time.perf_counter()
    with PrefillTimer(pipe.model) as timer, PeakMemory(device) as memory:
        outputs = pipe(
            inputs,
            batch_size=len(inputs),
            generate_kwargs={**generation, "logits_processor": LogitsProcessorList([timer])},
        )
    seconds = time.perf_counter() - start
    records = []
    for item, (result, *_) in zip(batch, outputs):
        records.append(
            {
                "id": item.id,
                "prediction": result["generated_text"].strip(),
                **task.record_fields(item),
                "audio_tokens_before": result["audio_tokens_before"],
                "audio_tokens_after": result["audio_tokens_after"],
            }
        )
    stats = {
        "ids": [item.id for item in batch],
        "batch_size": len(batch),
        "audio_tokens_before": sum(r["audio_tokens_before"] for r in records),
        "audio_tokens_after": sum(r["audio_tokens_after"] for r in records),
        "truncated_clips": truncated,
        "prefill_s": timer.seconds,
        "generate_s": seconds,
        "peak_memory_bytes": int(memory.peak_bytes),
        "device": str(device),
    }
    return records, stats


def _efficiency(records: list[dict[str, Any]], batches: list[dict[str, Any]]) -> dict[str, Any]:
    before = sum(r["audio_tokens_before"] for r in records)
    after = sum(r["audio_tokens_after"] for r in records)
    prefill = [b["prefill_s"] for b in batches if not math.isnan(b["prefill_s"])]
    return {
        "audio_tokens_before_mean": before / len(records),
        "audio_tokens_after_mean": after / len(records),
        "audio_tokens_kept": after / before if before else float("nan"),
        "batches": len(batches),
        "prefill_s_median": statistics.median(prefill) if prefill else None,
        "prefill_s_per_item": sum(prefill) / sum(b["batch_size"] for b in batches) if prefill else None,
        "generate_s_total": sum(b["generate_s"] for b in batches),
        "peak_memory_bytes_max": max((b["peak_memory_bytes"] for b in batches), default=None),
        "truncated_clips": sum(b["truncated_clips"] for b in batches),
    }


def _scored(
    task: EvalTask, spec: RunSpec, records: list[dict[str, Any]], batches: list[dict[str, Any]], model_name: str
) -> dict[str, Any]:
    """The content of a run's `metrics.json`: the run's identity, the task's scores and the efficiency summary."""
    return {
        "model": model_name,
        "task": task.name,
        **spec.record(),
        **task.score(records),
        "efficiency": _efficiency(records, batches),
    }


def evaluate(
    model: Any,
    processor: Any,
    task: EvalTask,
    specs: Sequence[RunSpec],
    out_dir: Path,
    *,
    model_name: str,
    batch_size: int = 8,
    max_new_tokens: Optional[int] = None,
    limit: Optional[int] = None,
    overwrite: bool = False,
    show_progress: bool = True,
    extra_config: Optional[dict[str, Any]] = None,
) -> list[RunResult]:
    """Evaluates `model` on `task` at every sweep point of `specs`, one run folder each (see the module docstring).

    Call it from every process of an `accelerate launch` / `torchrun` job (or from a plain process). The model is
    switched between settings with `hf_ltbm.audio_token_merge`, so it is loaded once for the whole sweep.

    Args:
        model, processor: a merging model (any setting; each run sets its own) and its (merging) processor.
        task: the `EvalTask` (data source and prompt included).
        specs: the sweep points (`expand_sweep`).
        out_dir: root folder; runs go to `out_dir/<model_slug>/<task>/<run name>/`.
        model_name: the model's id or path as given (recorded, and the folder name).
        batch_size: items per generate() call (left-padded batches).
        max_new_tokens: generation length (greedy decoding); default: the task's (`default_max_new_tokens`: 64,
            256 for speech recognition).
        limit: evaluate only the first `limit` items (smoke tests); recorded in the config.
        overwrite: delete existing run folders of these specs first instead of skipping or resuming them.
        show_progress: a tqdm bar per run on the main process.
        extra_config: more entries for `config.json` (e.g. the device as requested).

    Returns:
        One `RunResult` per spec, in order (on every process; `metrics` is filled on the main process).
    """
    from accelerate import PartialState

    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if max_new_tokens is None:
        max_new_tokens = task.default_max_new_tokens
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be >= 1, got {max_new_tokens}.")
    if limit is not None and limit < 1:
        raise ValueError(f"`limit` must be >= 1 (or None for all items), got {limit}.")
    device = next(model.parameters()).device
    state = PartialState(cpu=device.type == "cpu")  # cpu=True: gloo across CPU processes
    task.check_requirements()
    with state.main_process_first():  # downloads and archive unpacking happen once
        items = task.load()
    check_unique_ids(items, task.name)
    if limit is not None:
        items = items[:limit]
    generation = {"do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens}
    pipe = AudioTextToTextPipeline(model=model, processor=processor)
    extra = {"batch_size": batch_size, "num_processes": state.num_processes, **(extra_config or {})}
    results = []
    for spec in specs:
        path = Path(out_dir) / model_slug(model_name) / task.name / spec.name
        config = _resolved_config(model, model_name, task, spec, generation, limit, {"num_items": len(items), **extra})
        if state.is_main_process:
            if overwrite and path.exists():
                for child in path.iterdir():
                    child.unlink()
            path.mkdir(parents=True, exist_ok=True)
            _check_same_run(path, config)
        state.wait_for_everyone()
        if (path / "metrics.json").exists():
            logger.info(f"{path}: finished earlier, skipped.")
            metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
            results.append(RunResult(spec, path, metrics, skipped=True))
            continue
        results.append(_run(pipe, task, spec, items, path, config, generation, state, batch_size, show_progress))
    return results


def _run(
    pipe: AudioTextToTextPipeline,
    task: EvalTask,
    spec: RunSpec,
    items: list[EvalItem],
    path: Path,
    config: dict[str, Any],
    generation: dict[str, Any],
    state: Any,
    batch_size: int,
    show_progress: bool,
) -> RunResult:
    """One run: resume from the partial files, generate this process's share, gather, score and write (main)."""
    from accelerate.utils import gather_object

    order = {item.id: i for i, item in enumerate(items)}

    # every process reads what earlier (interrupted) attempts finished before anyone appends
    old_records = [r for f in sorted(path.glob("predictions*.jsonl")) for r in read_jsonl(f)]
    old_batches = [b for f in sorted(path.glob("batches*.jsonl")) for b in read_jsonl(f)]
    done = {r["id"] for r in old_records if r.get("id") in order}
    remaining = [item for item in items if item.id not in done]
    state.wait_for_everyone()
    if state.is_main_process:
        _write_json(path / "config.json", config)
        if done:
            logger.warning(f"{path}: resuming an interrupted run, {len(done)} of {len(items)} items done earlier.")
    partial = path / f"predictions.rank{state.process_index}.jsonl"
    partial_batches = path / f"batches.rank{state.process_index}.jsonl"
    _end_with_newline(partial)
    _end_with_newline(partial_batches)
    new_records, new_batches = [], []
    shard = _shard(state, remaining)
    bar = tqdm(
        total=len(shard),
        unit="item",
        desc=f"{task.name} {spec.name}",
        disable=not (show_progress and state.is_main_process),
    )
    with audio_token_merge(pipe.model, spec.setting(), pipe.processor), bar:
        for batch in _batches(shard, batch_size):
            records, stats = _run_batch(pipe, task, batch, generation)
            stats["rank"] = state.process_index
            _append_jsonl(partial, records)
            _append_jsonl(partial_batches, [stats])
            new_records.extend(records)
            new_batches.append(stats)
            bar.update(len(batch))
    gathered = gather_object(new_records) if state.num_processes > 1 else new_records
    gathered_batches = gather_object(new_batches) if state.num_processes > 1 else new_batches
    metrics: dict[str, Any] = {}
    if state.is_main_process:
        by_id: dict[str, dict[str, Any]] = {}
        for record in [*old_records, *gathered]:
            if record.get("id") in order:
                by_id.setdefault(record["id"], record)  # padding repeats items: keep the first copy
        records = sorted(by_id.values(), key=lambda r: order[r["id"]])
        missing = [item.id for item in items if item.id not in by_id]
        if missing:
            raise RuntimeError(f"{path}: no prediction for {len(missing)} item(s) (e.g. {missing[:3]}).")
        batches = [*old_batches, *gathered_batches]
        metrics = _scored(task, spec, records, batches, config["model"])
        _write_jsonl(path / "predictions.jsonl", records)
        _write_jsonl(path / "batches.jsonl", batches)
        task.write_outputs(records, path)  # the benchmark's own formats (e.g. MMAU's official evaluation input)
        for leftover in [*path.glob("predictions.rank*.jsonl"), *path.glob("batches.rank*.jsonl")]:
            leftover.unlink()
        _write_json(path / "metrics.json", metrics)  # written last: its presence marks the run finished
        logger.info(f"{path}: {task.primary_metric} = {metrics['metrics'].get(task.primary_metric)}")
    state.wait_for_everyone()
    return RunResult(spec, path, metrics, resumed_items=len(done))


def rescore(task: EvalTask, specs: Sequence[RunSpec], out_dir: Path, model_name: str) -> list[RunResult]:
    """Scores the saved predictions of finished runs again, without a model: `metrics.json` of every run folder of
    `specs` that holds a `predictions.jsonl` is rewritten with the task's current scorer (e.g. SPICE once CoreNLP is
    installed) and the efficiency summary of its `batches.jsonl`. Runs without saved predictions are left as they are
    (reported with `metrics={}`).

    Raises:
        ValueError: a run folder that holds predictions of another task.
    """
    results = []
    for spec in specs:
        path = Path(out_dir) / model_slug(model_name) / task.name / spec.name
        predictions = path / "predictions.jsonl"
        if not predictions.exists():
            logger.warning(f"{path}: no finished predictions to score (run it first); left as it is.")
            results.append(RunResult(spec, path, {}, skipped=True))
            continue
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if config.get("task") != task.name:
            raise ValueError(f"{path} holds a run of task {config.get('task')!r}, not {task.name!r}.")
        records = read_jsonl(predictions)
        batches = read_jsonl(path / "batches.jsonl") if (path / "batches.jsonl").exists() else []
        metrics = _scored(task, spec, records, batches, config.get("model", model_name))
        task.write_outputs(records, path)
        _write_json(path / "metrics.json", metrics)
        logger.info(f"{path}: rescored, {task.primary_metric} = {metrics['metrics'].get(task.primary_metric)}")
        results.append(RunResult(spec, path, metrics))
    return results
