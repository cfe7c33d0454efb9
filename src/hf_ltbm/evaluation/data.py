"""Evaluation data: Clotho v2.1 evaluation, AudioCaps test, MMAU test-mini and LibriSpeech test-clean / test-other as
lists of `EvalItem`s.

Each loader takes either a hub id (the public copy, through `datasets` or `huggingface_hub`) or a local folder in the
data set's original release format:

- Clotho: `clotho_captions_evaluation.csv` (`file_name, caption_1..caption_5`) next to the audio (in the folder or in
  `evaluation/`). Hub: `mteb/Clotho` (split `test`; columns `audio`, `raw_text` = the 5 captions).
- AudioCaps: `test.csv` (`audiocap_id, youtube_id, start_time, caption`, one row per caption) and the clips, named
  `<youtube_id>.wav`, `Y<youtube_id>.wav`, `<youtube_id>_<start_time>.wav` or `<audiocap_id>.wav` (any audio
  extension), in the folder or in `audio/` or `test/`. Hub: `OpenSound/AudioCaps` (split `test`, one row per caption).
- LibriSpeech (test-clean, test-other): the release's tree `<subset>/<speaker>/<chapter>/` with
  `<speaker>-<chapter>.trans.txt` (lines `<utterance id> <TRANSCRIPT>`) next to `<utterance id>.flac`; the folder may
  be `LibriSpeech/`, the subset folder or any folder above them. Hub: `openslr/librispeech_asr` (config `clean` or
  `other`, split `test`; columns `audio`, `text`, `id`).
- MMAU: `mmau-test-mini.json` (a list of `{id, audio_id, question, choices, answer, task, difficulty, ...}`) with
  `audio_id` paths relative to the folder (`./test-mini-audios/<id>.wav`). Hub: the JSON from `Sakshi113/MMAU` and the
  audio from `gamma-lab-umd/MMAU-test-mini` (files or an archive, unpacked once into the hub cache).

Hub copies are read with `Audio(decode=False)` and decoded with soundfile, which avoids `datasets`' torchcodec/FFmpeg
dependency. Audio is read lazily, one batch at a time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from transformers.utils import logging

from ..audio import AUDIO_EXTENSIONS, AudioInputError

logger = logging.get_logger(__name__)

__all__ = [
    "LIBRISPEECH_SUBSETS",
    "MMAU_CURRENT_VERSION",
    "DataSourceError",
    "DatasetFormatError",
    "EvalItem",
    "load_audiocaps",
    "load_clotho",
    "load_librispeech",
    "load_mmau",
    "mmau_dataset_info",
    "mmau_files",
]

PathLike = Union[str, os.PathLike]


@dataclass
class EvalItem:
    """One evaluation example.

    Attributes:
        id: unique id within the data set (file name, YouTube id, MMAU question id, LibriSpeech utterance id).
        audio: what `hf_ltbm.load_audio` reads (a path, or `{"bytes", "path"}` from `datasets`), or a zero-argument
            callable returning it (lazy hub rows).
        references: reference captions (captioning), or the one reference transcript (speech recognition).
        question, choices, answer: the multiple-choice fields (MMAU).
        task, difficulty: MMAU's grouping (`sound`/`music`/`speech`; `easy`/`medium`/`hard`).
        source_record: the data set's own record of the item (MMAU: its entry of the questions JSON), for outputs in
            the benchmark's own format.
    """

    id: str
    audio: Any
    references: list[str] = field(default_factory=list)
    question: Optional[str] = None
    choices: list[str] = field(default_factory=list)
    answer: Optional[str] = None
    task: Optional[str] = None
    difficulty: Optional[str] = None
    source_record: Optional[dict[str, Any]] = None

    def audio_source(self) -> Any:
        """The audio in a form `load_audio` reads (resolves a lazy row)."""
        return self.audio() if callable(self.audio) else self.audio


class DataSourceError(ValueError):
    """An evaluation data source that cannot be read (missing folder, hub copy unreachable)."""


class DatasetFormatError(DataSourceError):
    """A local folder or hub data set that is not in the expected format; the message says what was expected."""


def _hub_error(what: str, repo_id: str, err: Exception) -> DataSourceError:
    return DataSourceError(
        f"Could not load {what} from the hub id {repo_id!r} ({type(err).__name__}: {str(err).splitlines()[0]}). "
        "Offline or without access, download it elsewhere and pass the local folder (--data PATH)."
    )


# --------------------------------------------------------------------------------------------------- local files
def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _require_columns(rows: list[dict], columns: Sequence[str], where: str) -> None:
    have = set(rows[0]) if rows else set()
    missing = [c for c in columns if c not in have]
    if missing:
        raise DatasetFormatError(f"{where} lacks column(s) {missing}; it has {sorted(have)}.")


def _find_audio(folder: Path, stems: Sequence[str], subfolders: Sequence[str]) -> Optional[Path]:
    for sub in ("", *subfolders):
        for stem in stems:
            base = folder / sub / stem
            if base.suffix.lower() in AUDIO_EXTENSIONS and base.is_file():
                return base
            for ext in AUDIO_EXTENSIONS:
                candidate = base.with_name(base.name + ext)
                if candidate.is_file():
                    return candidate
    return None


def _missing_audio_error(name: str, folder: Path, ids: list[str], expected: str) -> DatasetFormatError:
    return DatasetFormatError(
        f"{name}: no audio file for {len(ids)} item(s) in {str(folder)!r} (e.g. {ids[:3]}); expected {expected}."
    )


def _clotho_local(folder: Path) -> list[EvalItem]:
    candidates = sorted(folder.glob("clotho_captions_evaluation*.csv")) or sorted(folder.glob("clotho_captions_*.csv"))
    if not candidates:
        raise DatasetFormatError(
            f"Clotho folder {str(folder)!r} has no clotho_captions_evaluation.csv (columns file_name, "
            "caption_1..caption_5)."
        )
    rows = _read_csv(candidates[0])
    _require_columns(rows, ["file_name", "caption_1"], str(candidates[0]))
    items, missing = [], []
    for row in rows:
        path = _find_audio(folder, [row["file_name"]], ["evaluation", "clotho_audio_evaluation"])
        if path is None:
            missing.append(row["file_name"])
            continue
        captions = [row[k].strip() for k in sorted(row) if k.startswith("caption_") and row[k] and row[k].strip()]
        items.append(EvalItem(id=row["file_name"], audio=str(path), references=captions))
    if missing:
        raise _missing_audio_error(
            "Clotho", folder, missing, "the files named in file_name, in the folder or evaluation/"
        )
    return items


def _audiocaps_local(folder: Path, split: str) -> list[EvalItem]:
    csv_path = folder / f"{split}.csv"
    if not csv_path.is_file():
        raise DatasetFormatError(
            f"AudioCaps folder {str(folder)!r} has no {split}.csv (columns audiocap_id, youtube_id, start_time, "
            "caption)."
        )
    rows = _read_csv(csv_path)
    _require_columns(rows, ["audiocap_id", "youtube_id", "start_time", "caption"], str(csv_path))
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["youtube_id"], []).append(row)
    items, missing = [], []
    for youtube_id, group in grouped.items():
        start = group[0]["start_time"]
        stems = [youtube_id, f"Y{youtube_id}", f"{youtube_id}_{start}", f"Y{youtube_id}_{start}"]
        stems += [row["audiocap_id"] for row in group]
        path = _find_audio(folder, stems, ["audio", split])
        if path is None:
            missing.append(youtube_id)
            continue
        references = [row["caption"].strip() for row in group if row["caption"].strip()]
        items.append(EvalItem(id=youtube_id, audio=str(path), references=references))
    if missing:
        logger.warning(
            f"AudioCaps: {len(missing)} of {len(grouped)} clip(s) have no audio file in {str(folder)!r} (e.g. "
            f"{missing[:3]}); they are left out (YouTube takedowns make every copy of AudioCaps incomplete)."
        )
    if not items:
        raise _missing_audio_error("AudioCaps", folder, missing, "<youtube_id>.wav (or Y<youtube_id>.wav, ...)")
    return items


def _mmau_json(folder: Path) -> Path:
    for pattern in ("mmau-test-mini.json", "*test-mini*.json", "*test_mini*.json"):
        found = sorted(folder.rglob(pattern))
        if found:
            return found[0]
    raise DatasetFormatError(f"MMAU folder {str(folder)!r} has no mmau-test-mini.json.")


def _mmau_items(json_path: Path, audio_root: Path) -> list[EvalItem]:
    try:
        records = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{str(json_path)!r} is not valid JSON: {err}") from err
    if not isinstance(records, list) or not records:
        raise DatasetFormatError(f"{str(json_path)!r} must hold a non-empty list of questions.")
    by_name: Optional[dict[str, Path]] = None
    items, missing = [], []
    for record in records:
        absent = [k for k in ("id", "audio_id", "question", "choices", "answer") if k not in record]
        if absent:
            raise DatasetFormatError(f"{str(json_path)!r}: question {record.get('id')!r} lacks {absent}.")
        relative = Path(record["audio_id"])
        path = audio_root / relative
        if not path.is_file():  # audio unpacked elsewhere: find it by file name
            if by_name is None:
                by_name = {p.name: p for p in audio_root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS}
            path = by_name.get(relative.name)
        if path is None:
            missing.append(str(record["audio_id"]))
            continue
        items.append(
            EvalItem(
                id=str(record["id"]),
                audio=str(path),
                question=record["question"],
                choices=[str(c) for c in record["choices"]],
                answer=str(record["answer"]),
                task=record.get("task"),
                difficulty=record.get("difficulty"),
                source_record=dict(record),
            )
        )
    if missing:
        raise _missing_audio_error("MMAU", audio_root, missing, "the files named in audio_id, relative to the folder")
    return items


def _librispeech_local(folder: Path, subset: str) -> list[EvalItem]:
    candidates = [folder / subset, folder / "LibriSpeech" / subset, folder]
    root = next((c for c in candidates if c.is_dir() and any(c.glob("*/*/*.trans.txt"))), None)
    if root is None:
        raise DatasetFormatError(
            f"LibriSpeech folder {str(folder)!r} has no {subset}/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt "
            "(the release's layout; pass LibriSpeech/, its parent or the subset folder)."
        )
    items, missing = [], []
    for transcript in sorted(root.glob("*/*/*.trans.txt")):
        for line in transcript.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            utterance, _, text = line.strip().partition(" ")
            path = _find_audio(transcript.parent, [utterance], [])
            if path is None:
                missing.append(utterance)
                continue
            items.append(EvalItem(id=utterance, audio=str(path), references=[text.strip()]))
    if missing:
        raise _missing_audio_error("LibriSpeech", root, missing, "<utterance id>.flac next to its .trans.txt")
    if not items:
        raise DatasetFormatError(f"LibriSpeech folder {str(root)!r}: the .trans.txt files list no utterances.")
    return items


# --------------------------------------------------------------------------------------------------- hub copies
def _hub_dataset(repo_id: str, split: str, name: Optional[str] = None) -> Any:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "Loading evaluation data from the hub needs `datasets`: pip install 'hf-ltbm[eval]'."
        ) from err
    try:
        dataset = datasets.load_dataset(repo_id, name, split=split)
    except (OSError, ValueError, ConnectionError) as err:
        what = f"split {split!r}" if name is None else f"config {name!r} split {split!r}"
        raise _hub_error(what, repo_id, err) from err
    if "audio" not in dataset.column_names:
        raise DatasetFormatError(f"{repo_id!r} split {split!r} has no 'audio' column; it has {dataset.column_names}.")
    return dataset.cast_column("audio", datasets.Audio(decode=False))


def _lazy_row(dataset: Any, index: int) -> Callable[[], Any]:
    return lambda: dataset[index]["audio"]


def _row_id(audio: Any, fallback: str) -> str:
    path = audio.get("path") if isinstance(audio, dict) else None
    return Path(path).name if path else fallback


def _clotho_hub(repo_id: str, split: str) -> list[EvalItem]:
    dataset = _hub_dataset(repo_id, split)
    columns = dataset.column_names
    caption_column = "raw_text" if "raw_text" in columns else "captions" if "captions" in columns else "text"
    if caption_column not in columns:
        raise DatasetFormatError(f"{repo_id!r} has no caption column (raw_text, captions or text); it has {columns}.")
    meta = dataset.remove_columns("audio")
    items = []
    for index, row in enumerate(meta):
        captions = row[caption_column]
        captions = [captions] if isinstance(captions, str) else list(captions)
        key = str(row.get("index") or row.get("file") or row.get("file_name") or index)
        items.append(EvalItem(id=key, audio=_lazy_row(dataset, index), references=[c.strip() for c in captions]))
    return items


def _audiocaps_hub(repo_id: str, split: str) -> list[EvalItem]:
    dataset = _hub_dataset(repo_id, split)
    columns = dataset.column_names
    if "caption" not in columns:
        raise DatasetFormatError(f"{repo_id!r} has no 'caption' column; it has {columns}.")
    key_column = next((c for c in ("youtube_id", "audiocap_id") if c in columns), None)
    if key_column is None:
        raise DatasetFormatError(f"{repo_id!r} has neither 'youtube_id' nor 'audiocap_id'; it has {columns}.")
    first: dict[str, int] = {}
    references: dict[str, list[str]] = {}
    for index, row in enumerate(dataset.remove_columns("audio")):
        key = str(row[key_column])
        first.setdefault(key, index)
        captions = row["caption"]
        references.setdefault(key, []).extend([captions] if isinstance(captions, str) else captions)
    return [
        EvalItem(id=key, audio=_lazy_row(dataset, index), references=[c.strip() for c in references[key]])
        for key, index in first.items()
    ]


def _librispeech_hub(repo_id: str, subset: str, config: Optional[str]) -> list[EvalItem]:
    dataset = _hub_dataset(repo_id, "test", name=config)
    columns = dataset.column_names
    text_column = next((c for c in ("text", "transcript", "sentence") if c in columns), None)
    if text_column is None:
        raise DatasetFormatError(
            f"{repo_id!r} has no transcript column (text, transcript, sentence); it has {columns}."
        )
    meta = dataset.remove_columns("audio")
    return [
        EvalItem(id=str(row.get("id") or index), audio=_lazy_row(dataset, index), references=[row[text_column]])
        for index, row in enumerate(meta)
    ]


def _unpack_archives(folder: Path) -> Path:
    """Unpacks zip/tar archives found in a hub snapshot once, into a sibling folder; returns where the audio is."""
    archives = [p for p in folder.rglob("*") if p.name.endswith((".zip", ".tar", ".tar.gz", ".tgz"))]
    if not archives:
        return folder
    target = Path(str(folder).rstrip("/") + "-unpacked")
    marker = target / ".complete"
    if not marker.exists():
        target.mkdir(parents=True, exist_ok=True)
        for archive in archives:
            logger.info(f"Unpacking {archive.name} into {target}")
            if archive.name.endswith(".zip"):
                with zipfile.ZipFile(archive) as handle:
                    handle.extractall(target)
            else:
                with tarfile.open(archive) as handle:
                    handle.extractall(target, filter="data")
        marker.touch()
    return target


def _mmau_hub(repo_id: str, audio_repo_id: str) -> tuple[Path, Path]:
    from huggingface_hub import snapshot_download

    try:
        meta = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=["*.json"]))
    except (OSError, ValueError) as err:
        raise _hub_error("the MMAU questions", repo_id, err) from err
    try:
        audio = _unpack_archives(Path(snapshot_download(audio_repo_id, repo_type="dataset")))
    except (OSError, ValueError) as err:
        raise _hub_error("the MMAU audio", audio_repo_id, err) from err
    return _mmau_json(meta), audio


# ------------------------------------------------------------------------------------------------------ loaders
def _local_path(source: PathLike, what: str) -> Optional[Path]:
    """The existing local file or folder `source` names, `None` for a hub id (`org/name`); a path that does not exist
    raises `DataSourceError` instead of being tried as a hub id."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text:
        raise DataSourceError(f"{what} data {text!r} does not exist.")
    return None


def _release_folder(path: Optional[Path]) -> bool:
    """Whether `path` is a folder in the original release format (a folder of parquet files, as exported to the hub,
    is read through `datasets` like a hub id)."""
    return path is not None and path.is_dir() and not any(path.glob("*.parquet")) and not (path / "data").is_dir()


def load_clotho(source: PathLike = "mteb/Clotho", split: str = "test") -> list[EvalItem]:
    """Clotho v2.1 evaluation (1045 clips, 5 captions each) from a hub id or a local folder (module docstring)."""
    path = _local_path(source, "Clotho")
    if _release_folder(path):
        return _clotho_local(path)
    return _clotho_hub(str(source), split)


def load_audiocaps(source: PathLike = "OpenSound/AudioCaps", split: str = "test") -> list[EvalItem]:
    """AudioCaps test (975 clips with about 5 captions each; one row per caption upstream, grouped here by clip)."""
    path = _local_path(source, "AudioCaps")
    if _release_folder(path):
        return _audiocaps_local(path, split)
    return _audiocaps_hub(str(source), split)


def load_mmau(
    source: PathLike = "Sakshi113/MMAU", audio_source: str = "gamma-lab-umd/MMAU-test-mini"
) -> list[EvalItem]:
    """MMAU test-mini (1000 questions) from the original JSON + audio folder, or from the hub (module docstring)."""
    return _mmau_items(*mmau_files(source, audio_source))


LIBRISPEECH_SUBSETS = ("test-clean", "test-other")
"""The LibriSpeech subsets the speech-recognition tasks read."""


def load_librispeech(source: PathLike = "openslr/librispeech_asr", subset: str = "test-clean") -> list[EvalItem]:
    """LibriSpeech `subset` (test-clean: 2620 utterances; test-other: 2939) from the release's folder tree or the hub
    copy (module docstring); each item's `references` holds its one transcript."""
    if subset not in LIBRISPEECH_SUBSETS:
        raise ValueError(f"`subset` must be one of {LIBRISPEECH_SUBSETS}, got {subset!r}.")
    path = _local_path(source, "LibriSpeech")
    if _release_folder(path):
        return _librispeech_local(path, subset)
    # the hub copy has a config per condition (test-clean -> clean); a local export of one subset has none
    return _librispeech_hub(str(source), subset, None if path is not None else subset.split("-")[1])


#: The MMAU release the public questions file has held since May 2025 (about a quarter of the questions revised).
MMAU_CURRENT_VERSION = "v05.15.25"


def mmau_files(
    source: PathLike = "Sakshi113/MMAU", audio_source: str = "gamma-lab-umd/MMAU-test-mini"
) -> tuple[Path, Path]:
    """`(questions JSON, audio folder)` of an MMAU source: a local folder or file, or the hub copies."""
    path = _local_path(source, "MMAU")
    if path is None:
        return _mmau_hub(str(source), audio_source)
    if path.is_file():
        return path, path.parent
    return _mmau_json(path), path


def mmau_dataset_info(questions: Path, from_hub: bool) -> dict[str, Any]:
    """What identifies the MMAU questions a run used: the release (`v05.15.25` for the hub copy, or when the file name
    says so; a local copy of unknown date is `unknown`) and the file's sha256."""
    version = MMAU_CURRENT_VERSION if from_hub or MMAU_CURRENT_VERSION in questions.name else "unknown"
    return {
        "benchmark": "MMAU test-mini",
        "version": version,
        "questions_file": questions.name,
        "questions_sha256": hashlib.sha256(questions.read_bytes()).hexdigest(),
    }


def check_unique_ids(items: list[EvalItem], name: str) -> None:
    """Raises `DatasetFormatError` when two items share an id (results are keyed by id)."""
    seen: set[str] = set()
    duplicates = [item.id for item in items if item.id in seen or seen.add(item.id)]
    if duplicates:
        raise DatasetFormatError(f"{name}: item ids must be unique; repeated: {sorted(set(duplicates))[:5]}.")


def read_item_audio(item: EvalItem, sampling_rate: int, max_seconds: Optional[float]) -> tuple[Any, bool]:
    """The item's waveform at `sampling_rate`, cut to `max_seconds` (the backbone's limit); returns `(wave,
    truncated)`. Undecodable audio raises `AudioInputError` naming the item."""
    from ..audio import load_audio

    try:
        wave = load_audio(item.audio_source(), sampling_rate)
    except AudioInputError as err:
        raise AudioInputError(f"Item {item.id!r}: {err}") from err
    if max_seconds is not None and math.isfinite(max_seconds) and len(wave) > int(max_seconds * sampling_rate):
        return wave[: int(max_seconds * sampling_rate)], True
    return wave, False
