"""Tiny evaluation data sets written by the tests, in the original release formats (and a hub-style parquet copy):
synthetic tones, chirps and noise with captions / multiple-choice questions about them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf

SOUNDS = [
    ("a steady high tone", "tone", 880.0),
    ("a low humming tone", "tone", 110.0),
    ("white noise hissing", "noise", None),
    ("a rising whistle", "chirp", None),
    ("short clicks repeating", "clicks", None),
    ("a steady middle tone", "tone", 440.0),
]


def sound(kind: str, freq, seconds: float, rate: int, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    if kind == "tone":
        wave = np.sin(2 * np.pi * freq * t)
    elif kind == "noise":
        wave = rng.uniform(-1, 1, t.size)
    elif kind == "chirp":
        wave = np.sin(2 * np.pi * (200 + 900 * t / seconds) * t)
    else:
        wave = np.zeros_like(t)
        wave[:: rate // 8] = 1.0
    return (0.3 * wave).astype(np.float32)


def _captions(text: str) -> list[str]:
    return [f"{text}", f"{text} can be heard", f"there is {text}", f"someone plays {text}", f"{text} in a room"]


def make_clotho(folder: Path, n: int = 4, rate: int = 44100) -> Path:
    """`clotho_captions_evaluation.csv` + `evaluation/<file_name>.wav`, 5 captions per clip."""
    (folder / "evaluation").mkdir(parents=True, exist_ok=True)
    with open(folder / "clotho_captions_evaluation.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        for i in range(n):
            text, kind, freq = SOUNDS[i % len(SOUNDS)]
            name = f"clip {i:02d}.wav"
            sf.write(str(folder / "evaluation" / name), sound(kind, freq, 1.0 + 0.5 * i, rate, i), rate)
            writer.writerow([name, *_captions(text)])
    return folder


def make_audiocaps(folder: Path, n: int = 4, rate: int = 32000, missing: int = 0) -> Path:
    """`test.csv` (one row per caption) + `audio/Y<youtube_id>.wav`; the last `missing` clips have no audio."""
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    with open(folder / "test.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        for i in range(n):
            text, kind, freq = SOUNDS[i % len(SOUNDS)]
            youtube_id = f"yt{i:03d}abc"
            if i < n - missing:
                sf.write(str(folder / "audio" / f"Y{youtube_id}.wav"), sound(kind, freq, 2.0, rate, i), rate)
            for j, caption in enumerate(_captions(text)):
                writer.writerow([1000 + 10 * i + j, youtube_id, 30, caption])
    return folder


def mmau_records(n: int = 6) -> list[dict]:
    tasks, levels = ["sound", "music", "speech"], ["easy", "medium", "hard"]
    records = []
    for i in range(n):
        text, kind, _ = SOUNDS[i % len(SOUNDS)]
        choices = ["a steady tone", "white noise", "a rising whistle", "clicks"]
        answer = {"tone": "a steady tone", "noise": "white noise", "chirp": "a rising whistle"}.get(kind, "clicks")
        records.append(
            {
                "id": f"q-{i:03d}",
                "audio_id": f"./test-mini-audios/q-{i:03d}.wav",
                "question": "Which sound is in the recording?",
                "choices": choices,
                "answer": answer,
                "dataset": "synthetic",
                "task": tasks[i % 3],
                "split": "test-mini",
                "category": "Sound identification",
                "sub-category": None,
                "difficulty": levels[(i // 3) % 3],
            }
        )
    return records


def make_mmau(folder: Path, n: int = 6, rate: int = 16000) -> Path:
    """`mmau-test-mini.json` + `test-mini-audios/<id>.wav`."""
    (folder / "test-mini-audios").mkdir(parents=True, exist_ok=True)
    records = mmau_records(n)
    for i, record in enumerate(records):
        _, kind, freq = SOUNDS[i % len(SOUNDS)]
        sf.write(str(folder / record["audio_id"]), sound(kind, freq, 1.5, rate, i), rate)
    (folder / "mmau-test-mini.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    return folder


def _write_parquet(rows: dict, features, path: Path) -> None:
    """Writes rows as a parquet file carrying `datasets` feature metadata, as hub parquet exports do. The `Audio`
    column is written as its storage struct (bytes, path): `datasets` 5 needs torchcodec to encode audio itself."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    storage = datasets.Features(
        {
            k: ({"bytes": datasets.Value("binary"), "path": datasets.Value("string")} if k == "audio" else v)
            for k, v in features.items()
        }
    )
    table = datasets.Dataset.from_dict(rows, features=storage).data.table
    metadata = {"huggingface": json.dumps({"info": {"features": features.to_dict()}})}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_arrays(table.columns, names=table.column_names).replace_schema_metadata(metadata), path
    )


def _wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV")
    return buffer.getvalue()


def make_hub_clotho(folder: Path, n: int = 3, rate: int = 44100) -> Path:
    """A hub-style copy like `mteb/Clotho`: `data/test-00000-of-00001.parquet` with index, audio, text, raw_text."""
    import datasets

    rows = {"index": [], "datasetname": [], "audio": [], "audio_len": [], "text": [], "raw_text": []}
    for i in range(n):
        text, kind, freq = SOUNDS[i % len(SOUNDS)]
        wave = sound(kind, freq, 1.0, rate, i)
        rows["index"].append(f"clotho_{i}")
        rows["datasetname"].append("Clotho")
        rows["audio"].append({"bytes": _wav_bytes(wave, rate), "path": f"clip{i}.wav"})
        rows["audio_len"].append(1.0)
        rows["text"].append(text)
        rows["raw_text"].append(_captions(text))
    features = datasets.Features(
        {
            "index": datasets.Value("string"),
            "datasetname": datasets.Value("string"),
            "audio": datasets.Audio(sampling_rate=rate),
            "audio_len": datasets.Value("float32"),
            "text": datasets.Value("string"),
            "raw_text": datasets.Sequence(datasets.Value("string")),
        }
    )
    _write_parquet(rows, features, folder / "data" / "test-00000-of-00001.parquet")
    return folder


def make_hub_audiocaps(folder: Path, n: int = 3, rate: int = 16000) -> Path:
    """A hub-style copy like `OpenSound/AudioCaps`: one row per caption, the clip's audio repeated on each."""
    import datasets

    rows = {"audiocap_id": [], "youtube_id": [], "start_time": [], "caption": [], "audio": []}
    for i in range(n):
        text, kind, freq = SOUNDS[i % len(SOUNDS)]
        audio = {"bytes": _wav_bytes(sound(kind, freq, 1.0, rate, i), rate), "path": f"Y{i}.wav"}
        for j, caption in enumerate(_captions(text)):
            rows["audiocap_id"].append(100 * i + j)
            rows["youtube_id"].append(f"yt{i}")
            rows["start_time"].append(0)
            rows["caption"].append(caption)
            rows["audio"].append(audio)
    features = datasets.Features(
        {
            "audiocap_id": datasets.Value("int64"),
            "youtube_id": datasets.Value("string"),
            "start_time": datasets.Value("int64"),
            "caption": datasets.Value("string"),
            "audio": datasets.Audio(sampling_rate=rate),
        }
    )
    _write_parquet(rows, features, folder / "data" / "test-00000-of-00001.parquet")
    return folder


TRANSCRIPTS = [
    "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS",
    "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM",
    "AFTER EARLY NIGHTFALL THE YELLOW LAMPS WOULD LIGHT UP HERE AND THERE",
    "THE COLOUR OF THE SKY WAS GREY AT TWENTY FIVE PAST SIX",
    "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES",
]
"""Upper-case, unpunctuated reference transcripts in LibriSpeech's style (British spellings and a number included)."""


def make_librispeech(folder: Path, subset: str = "test-clean", n: int = 5, rate: int = 16000) -> Path:
    """The release's tree `LibriSpeech/<subset>/<speaker>/<chapter>/`: `<speaker>-<chapter>.trans.txt` and one FLAC
    per utterance, two chapters of two speakers."""
    root = folder / "LibriSpeech" / subset
    lines: dict[Path, list[str]] = {}
    for i in range(n):
        speaker, chapter = 1089 + i % 2, 134686 + i % 2
        chapter_dir = root / str(speaker) / str(chapter)
        chapter_dir.mkdir(parents=True, exist_ok=True)
        utterance = f"{speaker}-{chapter}-{i:04d}"
        _, kind, freq = SOUNDS[i % len(SOUNDS)]
        sf.write(str(chapter_dir / f"{utterance}.flac"), sound(kind, freq, 1.0 + 0.25 * i, rate, i), rate)
        transcript = chapter_dir / f"{speaker}-{chapter}.trans.txt"
        lines.setdefault(transcript, []).append(f"{utterance} {TRANSCRIPTS[i % len(TRANSCRIPTS)]}")
    for transcript, entries in lines.items():
        transcript.write_text("\n".join(entries) + "\n", encoding="utf-8")
    return folder


def make_hub_librispeech(folder: Path, n: int = 3, rate: int = 16000) -> Path:
    """A hub-style copy like `openslr/librispeech_asr` (one condition): file, audio, text, speaker_id, chapter_id,
    id."""
    import datasets

    rows = {"file": [], "audio": [], "text": [], "speaker_id": [], "chapter_id": [], "id": []}
    for i in range(n):
        _, kind, freq = SOUNDS[i % len(SOUNDS)]
        utterance = f"1089-134686-{i:04d}"
        rows["file"].append(f"{utterance}.flac")
        rows["audio"].append({"bytes": _wav_bytes(sound(kind, freq, 1.0, rate, i), rate), "path": f"{utterance}.flac"})
        rows["text"].append(TRANSCRIPTS[i % len(TRANSCRIPTS)])
        rows["speaker_id"].append(1089)
        rows["chapter_id"].append(134686)
        rows["id"].append(utterance)
    features = datasets.Features(
        {
            "file": datasets.Value("string"),
            "audio": datasets.Audio(sampling_rate=rate),
            "text": datasets.Value("string"),
            "speaker_id": datasets.Value("int64"),
            "chapter_id": datasets.Value("int64"),
            "id": datasets.Value("string"),
        }
    )
    _write_parquet(rows, features, folder / "data" / "test-00000-of-00001.parquet")
    return folder
