"""The evaluation tasks: how each loads its data, prompts the model and scores the answers (one small class per task
behind a registry, like the merge methods). The loaders and scorers are imported when a task uses them, so the
registry (`TASKS`: the command line's help) imports neither torch nor transformers.

Default prompts (override with `--prompt`; the MMAU template fills `{question}` and `{choices}`):

- `clotho`, `audiocaps`: "Generate a caption for this audio in one sentence." Qwen2-Audio-Instruct and AF3 both
  answer this with a single descriptive sentence, close to the references' style.
- `mmau`: the question, then the choices one per line, then "Answer with the text of the correct choice." The
  string-match scorer looks for the choice's words, so the prompt asks for the words rather than a letter.
- `librispeech_test_clean`, `librispeech_test_other`: a plain transcription request per backbone. Audio Flamingo 3:
  "Transcribe the input speech.", the request of its transformers documentation; Qwen2-Audio-Instruct (and any other
  backbone): "Recognize the speech and give me the transcription." Both chat models then answer with the transcript
  alone, which WER needs (a preamble such as "The speech says:" counts as insertions).

The paper does not publish its prompts; these are documented in `docs/reproduce.md` as a known difference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from ..backbones import BACKBONES
from .multiple_choice import mmau_accuracy

if TYPE_CHECKING:
    from .data import EvalItem

__all__ = ["TASKS", "CaptioningTask", "EvalTask", "MultipleChoiceTask", "SpeechRecognitionTask", "get_task"]


@dataclass
class EvalTask:
    """A task: data source, prompt and scoring. Subclasses set `name`, `default_source` and the three methods."""

    name: ClassVar[str]
    default_source: ClassVar[str]
    default_prompt: ClassVar[str]
    primary_metric: ClassVar[str]
    #: The kind of task whose prompt a backbone may declare (`Backbone.task_prompts`), e.g. `"asr"`.
    prompt_kind: ClassVar[Optional[str]] = None
    #: Generation length when the caller gives none (long enough for the task's longest answers).
    default_max_new_tokens: ClassVar[int] = 64

    source: Optional[str] = None
    prompt: Optional[str] = None

    @property
    def resolved_source(self) -> str:
        """The data source in use: the given hub id or folder, else the public copy."""
        return str(self.source) if self.source is not None else self.default_source

    def prompt_template(self, model_type: Optional[str] = None) -> str:
        """The prompt (template) in use for a backbone (`config.model_type`): the given one, else the task's default
        for that backbone."""
        if self.prompt is not None:
            return self.prompt
        backbone = BACKBONES.get(model_type or "")
        prompts = {} if backbone is None or self.prompt_kind is None else backbone.task_prompts
        return prompts.get(self.prompt_kind, self.default_prompt)

    def load(self) -> list[EvalItem]:
        """The task's items (read once, then cached on the task)."""
        cached = self.__dict__.get("_items")
        if cached is None:
            cached = self.__dict__["_items"] = self._load()
        return cached

    def _load(self) -> list[EvalItem]:
        raise NotImplementedError

    def prompt_for(self, item: EvalItem, model_type: Optional[str] = None) -> str:
        """The text prompt for one item, for the backbone `model_type`."""
        return self.prompt_template(model_type)

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
        from .captioning import captioning_requirements

        captioning_requirements()

    def record_fields(self, item: EvalItem) -> dict[str, Any]:
        return {"references": item.references}

    def score(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from .captioning import caption_metrics

        return caption_metrics(
            {r["id"]: r["prediction"] for r in records}, {r["id"]: r["references"] for r in records}
        )


@dataclass
class ClothoTask(CaptioningTask):
    """Clotho v2.1 evaluation split: 1045 clips of 15-30 s, 5 captions each."""

    name: ClassVar[str] = "clotho"
    default_source: ClassVar[str] = "mteb/Clotho"

    def _load(self) -> list[EvalItem]:
        from .data import load_clotho

        return load_clotho(self.resolved_source)


@dataclass
class AudioCapsTask(CaptioningTask):
    """AudioCaps test split: 975 ten-second YouTube clips, about 5 captions each."""

    name: ClassVar[str] = "audiocaps"
    default_source: ClassVar[str] = "OpenSound/AudioCaps"

    def _load(self) -> list[EvalItem]:
        from .data import load_audiocaps

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
        from .data import _mmau_items, mmau_dataset_info, mmau_files

        questions, audio = mmau_files(self.resolved_source, self.audio_source)
        from_hub = self.source is None or not Path(self.resolved_source).exists()
        self.__dict__["_dataset_info"] = mmau_dataset_info(questions, from_hub)
        return _mmau_items(questions, audio)

    def dataset_info(self) -> dict[str, Any]:
        return dict(self.__dict__.get("_dataset_info", {}))

    def prompt_for(self, item: EvalItem, model_type: Optional[str] = None) -> str:
        choices = "\n".join(f"({chr(ord('A') + i)}) {choice}" for i, choice in enumerate(item.choices))
        return (
            self.prompt_template(model_type).replace("{choices}", choices).replace("{question}", item.question or "")
        )

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


@dataclass
class SpeechRecognitionTask(EvalTask):
    """Speech recognition on LibriSpeech, scored by WER and CER after Whisper's English normalisation (`asr`)."""

    subset: ClassVar[str]
    default_source: ClassVar[str] = "openslr/librispeech_asr"
    default_prompt: ClassVar[str] = "Recognize the speech and give me the transcription."
    prompt_kind: ClassVar[Optional[str]] = "asr"
    primary_metric: ClassVar[str] = "WER"
    default_max_new_tokens: ClassVar[int] = 256  # the longest test utterances (35 s) have about 100 words

    def _load(self) -> list[EvalItem]:
        from .data import load_librispeech

        return load_librispeech(self.resolved_source, self.subset)

    def check_requirements(self) -> None:
        from .asr import asr_requirements

        asr_requirements()

    def record_fields(self, item: EvalItem) -> dict[str, Any]:
        return {"reference": item.references[0]}

    def dataset_info(self) -> dict[str, Any]:
        return {"benchmark": f"LibriSpeech {self.subset}"}

    def score(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from .asr import asr_metrics

        return asr_metrics({r["id"]: r["prediction"] for r in records}, {r["id"]: r["reference"] for r in records})


@dataclass
class LibriSpeechCleanTask(SpeechRecognitionTask):
    """LibriSpeech test-clean: 2620 read-English utterances (5.4 h), the easier condition."""

    name: ClassVar[str] = "librispeech_test_clean"
    subset: ClassVar[str] = "test-clean"


@dataclass
class LibriSpeechOtherTask(SpeechRecognitionTask):
    """LibriSpeech test-other: 2939 utterances (5.3 h) of speakers that recognisers found harder."""

    name: ClassVar[str] = "librispeech_test_other"
    subset: ClassVar[str] = "test-other"


TASKS: dict[str, type[EvalTask]] = {
    task.name: task
    for task in (ClothoTask, AudioCapsTask, MultipleChoiceTask, LibriSpeechCleanTask, LibriSpeechOtherTask)
}
"""Task name -> class."""


def get_task(name: str, source: Optional[str | Path] = None, prompt: Optional[str] = None) -> EvalTask:
    """The task `name` (one of `TASKS`) reading `source` (hub id or local folder; default: the public copy) with
    `prompt` (default: the task's, per backbone)."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; available: {', '.join(TASKS)}.")
    return TASKS[name](source=None if source is None else str(source), prompt=prompt)
