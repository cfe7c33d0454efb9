"""The evaluation harness behind `hf-ltbm eval` and `hf-ltbm report`: tasks (Clotho, AudioCaps, MMAU), their metrics,
resumable data-parallel sweeps of methods x settings, and the results table and plots. The names below are loaded
when first used (the task names need neither torch nor transformers).

Needs the `eval` extra (`pip install "hf-ltbm[eval]"`: datasets, pycocoevalcap, matplotlib) and Java for the captioning
metrics.
"""

from __future__ import annotations

from ..lazy import lazy_exports

#: Name -> the module (relative to this package) that defines it.
_EXPORTS = {
    **dict.fromkeys(("CAPTION_METRICS", "MetricUnavailableError", "caption_metrics"), ".captioning"),
    **dict.fromkeys(
        ("DatasetFormatError", "DataSourceError", "EvalItem", "load_audiocaps", "load_clotho", "load_mmau"), ".data"
    ),
    **dict.fromkeys(("DCASE_METRICS", "dcase_metrics"), ".dcase"),
    **dict.fromkeys(("mmau_accuracy", "string_match"), ".multiple_choice"),
    **dict.fromkeys(("RunResult", "evaluate", "read_jsonl"), ".runner"),
    **dict.fromkeys(("RunSpec", "expand_sweep", "model_slug"), ".sweep"),
    **dict.fromkeys(("TASKS", "EvalTask", "get_task"), ".tasks"),
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
