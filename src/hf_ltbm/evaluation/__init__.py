"""The evaluation harness behind `hf-ltbm eval` and `hf-ltbm report`: tasks (Clotho, AudioCaps, MMAU), their metrics,
resumable data-parallel sweeps of methods x settings, and the results table and plots.

Needs the `eval` extra (`pip install "hf-ltbm[eval]"`: datasets, pycocoevalcap, matplotlib) and Java for the captioning
metrics.
"""

from .captioning import CAPTION_METRICS, MetricUnavailableError, caption_metrics
from .data import DatasetFormatError, DataSourceError, EvalItem, load_audiocaps, load_clotho, load_mmau
from .dcase import DCASE_METRICS, dcase_metrics
from .multiple_choice import mmau_accuracy, string_match
from .runner import RunResult, RunSpec, evaluate, expand_sweep, model_slug, read_jsonl
from .tasks import TASKS, EvalTask, get_task

__all__ = [
    "CAPTION_METRICS",
    "DCASE_METRICS",
    "TASKS",
    "DataSourceError",
    "DatasetFormatError",
    "EvalItem",
    "EvalTask",
    "MetricUnavailableError",
    "RunResult",
    "RunSpec",
    "caption_metrics",
    "dcase_metrics",
    "evaluate",
    "expand_sweep",
    "get_task",
    "load_audiocaps",
    "load_clotho",
    "load_mmau",
    "mmau_accuracy",
    "model_slug",
    "read_jsonl",
    "string_match",
]
