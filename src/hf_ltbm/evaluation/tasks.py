"""The evaluation tasks: how each loads its data, prompts the model and scores the answers (one small class per task
behind a registry, like the merge methods).

Default prompts (override with `--prompt`; the MMAU template fills `{question}` and `{choices}`):

- `clotho`, `audiocaps`: "Generate a caption for this audio in one sentence." Qwen2-Audio-Instruct and AF3 both
  answer this with a single descriptive sentence, close to the references' style.
- `mmau`: the question, then the choices one per line, then "Answer with the text of the correct choice." The
  string-match scorer looks for the choice's words, so the prompt asks for the words rather than a letter.

The paper does not publish its prompts; these are documented in `docs/reproduce.md` as a known difference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from .captioning import caption_metrics, captioning_requirements
from .data import EvalItem, _mmau_items, load_audiocaps, load_clotho, mmau_dataset_info, mmau_files
from .multiple_choice import mmau_accuracy

__all__ = ["TASKS", "CaptioningTask", "EvalTask", "MultipleChoiceTask", "get_task"]


@dataclass
class EvalTask:
    """A task: data source, prompt and scoring. Subclasses set `name`, `default_source` and the three methods."""

    name: ClassVar[str]
    default_source: ClassVar[str]
    default_prompt: ClassVar[str]
    primary_metric: ClassVar[str]

    source: Optional[str] = None
    prompt: Optional[str] = None

    @property
    def resolved_source(self) -> str:
        """The data source in use: the given hub id or folder, else the public copy."""
        return str(self.source) if self.source is not None else self.default_source

    @property
    def resolved_prompt(self) -> str:
        """The prompt (template) in use: the given one, else the task's default."""
        return self.prompt if self.prompt is not None else self.default_prompt

    def load(self) -> list[EvalItem]:
        """The task's items (read once, then cached on the task)."""
        cached = self.__dict__.get("_items")
        if cached is None:
            cached = self.__dict__["_items"] = self._load()
        return cached

    def _load(self) -> list[EvalItem]:
        raise NotImplementedError

    def prompt_for(self, item: EvalItem) -> str:
        """The text prompt for one item."""
        return self.resolved_prompt

    def check_requirements(self) -> None:
        """Raises before a run when the scorer cannot work here."""

    def score(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Metrics of the gathered `records` (one per item: `id`, `prediction` and the `record_fields`)."""
        raise NotImplementedError

    def record_fields(self, item: EvalItem) -> dict[str, Any]:
        """What a predictions line stores about its item besides the prediction (to score without the data set)."""
        return {}

    def dataset_info(self) -> dict[str, Any]:
        """What identifies the data the items came from (recorded in `config.json`; after `load()`)."""
        return {}

    def write_outputs(self, records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
        """Writes the predictions in the benchmark's own formats into a finished run's `folder`; returns the files."""
        return []


@dataclass
class CaptioningTask(EvalTask):
    """Audio captioning scored with the COCO caption metrics on the whole gathered set (CIDEr-D first)."""

    default_prompt: ClassVar[str] = "Generate a caption for this audio in one sentence."
    primary_metric: ClassVar[str] = "CIDEr-D"

    def check_requirements(self) -> None:
        captioning_requirements()

    def record_fields(self, item: EvalItem) -> dict[str, Any]:
        return {"references": item.references}

    def score(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return caption_metrics(
            {r["id"]: r["prediction"] for r in records}, {r["id"]: r["references"] for r in records}
        )


@dataclass
class ClothoTask(CaptioningTask):
    """Clotho v2.1 evaluation split: 1045 clips of 15-30 s, 5 captions each."""

    name: ClassVar[str] = "clotho"
    default_source: ClassVar[str] = "mteb/Clotho"

    def _load(self) -> list[EvalItem]:
        return load_clotho(self.resolved_source)


@dataclass
class AudioCapsTask(CaptioningTask):
    """AudioCaps test split: 975 ten-second YouTube clips, about 5 captions each."""

    name: ClassVar[str] = "audiocaps"
    default_source: ClassVar[str] = "OpenSound/AudioCaps"

    def _load(self) -> list[EvalItem]:
        return load_audiocaps(self.resolved_source)


@dataclass
class MultipleChoiceTask(EvalTask):
    """MMAU test-mini: 1000 multiple-choice questions on sound, music and speech, scored by string match."""

    name: ClassVar[str] = "mmau"
    default_source: ClassVar[str] = "Sakshi113/MMAU"
    default_prompt: ClassVar[str] = "{question}\nChoices:\n{choices}\nAnswer with the text of the correct choice."
    primary_metric: ClassVar[str] = "accuracy"
    audio_source: str = "gamma-lab-umd/MMAU-test-mini"

    def __post_init__(self) -> None:
        if self.prompt is not None and "{question}" not in self.prompt:
            raise ValueError(
                f"The mmau prompt must contain '{{question}}' (and usually '{{choices}}'), got {self.prompt!r}."
            )

    #: The predictions in the input format of MMAU's official `evaluation.py`, in each finished run folder.
    official_file: ClassVar[str] = "mmau_predictions.json"

    def _load(self) -> list[EvalItem]:
        questions, audio = mmau_files(self.resolved_source, self.audio_source)
        from_hub = self.source is None or not Path(self.resolved_source).exists()
        self.__dict__["_dataset_info"] = mmau_dataset_info(questions, from_hub)
        return _mmau_items(questions, audio)

    def dataset_info(self) -> dict[str, Any]:
        return dict(self.__dict__.get("_dataset_info", {}))

    def prompt_for(self, item: EvalItem) -> str:
        choices = "\n".join(f"({chr(ord('A') + i)}) {choice}" for i, choice in enumerate(item.choices))
        return self.resolved_prompt.replace("{choices}", choices).replace("{question}", item.question or "")

    def record_fields(self, item: EvalItem) -> dict[str, Any]:
        fields = {"answer": item.answer, "choices": item.choices, "task": item.task, "difficulty": item.difficulty}
        return {**fields, "source_record": item.source_record}

    def score(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return mmau_accuracy(records)

    def write_outputs(self, records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
        """`mmau_predictions.json`: each question's entry of the benchmark file with the prediction under
        `model_output` (what the official `evaluation.py` reads) and `model_prediction` (what its README names), so
        that `python evaluation.py --input mmau_predictions.json` scores the run."""
        entries = []
        for record in records:
            entry = dict(record.get("source_record") or {"id": record["id"], "answer": record["answer"]})
            entry.setdefault("choices", record["choices"])
            entries.append({**entry, "model_output": record["prediction"], "model_prediction": record["prediction"]})
        path = Path(folder) / self.official_file
        path.write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return [path]


TASKS: dict[str, type[EvalTask]] = {task.name: task for task in (ClothoTask, AudioCapsTask, MultipleChoiceTask)}
"""Task name -> class."""


def get_task(name: str, source: Optional[str | Path] = None, prompt: Optional[str] = None) -> EvalTask:
    """The task `name` (`clotho`, `audiocaps`, `mmau`) reading `source` (hub id or local folder; default: the public
    copy) with `prompt` (default: the task's)."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; available: {', '.join(TASKS)}.")
    return TASKS[name](source=None if source is None else str(source), prompt=prompt)
