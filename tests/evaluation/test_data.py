import json
import tarfile

import numpy as np
import pytest

from hf_ltbm.audio import AudioInputError
from hf_ltbm.evaluation import data
from hf_ltbm.evaluation.data import (
    DatasetFormatError,
    DataSourceError,
    EvalItem,
    check_unique_ids,
    load_audiocaps,
    load_clotho,
    load_librispeech,
    load_mmau,
    read_item_audio,
)

from .fixtures import (
    TRANSCRIPTS,
    make_audiocaps,
    make_clotho,
    make_hub_audiocaps,
    make_hub_clotho,
    make_hub_librispeech,
    make_librispeech,
    make_mmau,
    mmau_records,
)


def test_clotho_local_original_format(tmp_path):
    items = load_clotho(make_clotho(tmp_path, n=3))
    assert [i.id for i in items] == ["clip 00.wav", "clip 01.wav", "clip 02.wav"]
    assert len(items[0].references) == 5 and items[0].references[0] == "a steady high tone"
    wave, truncated = read_item_audio(items[2], 16000, None)
    assert wave.shape == (32000,) and not truncated  # 2 s at 44.1 kHz resampled to 16 kHz


def test_clotho_hub_copy(tmp_path):
    items = load_clotho(make_hub_clotho(tmp_path, n=3))
    assert [i.id for i in items] == ["clotho_0", "clotho_1", "clotho_2"]
    assert items[1].references[0] == "a low humming tone" and len(items[1].references) == 5
    source = items[0].audio_source()
    assert set(source) >= {"bytes", "path"}  # read with Audio(decode=False): no torchcodec needed
    wave, _ = read_item_audio(items[0], 16000, None)
    assert wave.shape == (16000,)


def test_audiocaps_local_groups_captions_and_skips_missing_clips(tmp_path):
    items = load_audiocaps(make_audiocaps(tmp_path, n=4, missing=1))
    assert [i.id for i in items] == ["yt000abc", "yt001abc", "yt002abc"]
    assert all(len(i.references) == 5 for i in items)
    assert items[0].audio.endswith("Yyt000abc.wav")


def test_audiocaps_hub_copy_one_row_per_caption(tmp_path):
    items = load_audiocaps(make_hub_audiocaps(tmp_path, n=3))
    assert [i.id for i in items] == ["yt0", "yt1", "yt2"]
    assert [len(i.references) for i in items] == [5, 5, 5]
    assert read_item_audio(items[2], 16000, None)[0].shape == (16000,)


def test_mmau_local_original_format(tmp_path):
    items = load_mmau(make_mmau(tmp_path, n=6))
    assert len(items) == 6
    first = items[0]
    assert first.id == "q-000" and first.answer == "a steady tone" and len(first.choices) == 4
    assert (first.task, first.difficulty) == ("sound", "easy")
    assert load_mmau(tmp_path / "mmau-test-mini.json")[0].id == "q-000"  # the JSON file itself


def test_mmau_hub_with_an_audio_archive(tmp_path, monkeypatch):
    meta, audio = tmp_path / "meta", tmp_path / "audio"
    meta.mkdir()
    (meta / "mmau-test-mini.json").write_text(json.dumps(mmau_records(3)))
    source = make_mmau(tmp_path / "src", n=3)
    audio.mkdir()
    with tarfile.open(audio / "test-mini-audios.tar.gz", "w:gz") as archive:
        archive.add(source / "test-mini-audios", arcname="test-mini-audios")
    snapshots = {"Sakshi113/MMAU": meta, "gamma-lab-umd/MMAU-test-mini": audio}
    calls = []

    def fake_snapshot_download(repo_id, repo_type=None, **kwargs):
        calls.append((repo_id, repo_type))
        return str(snapshots[repo_id])

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    items = load_mmau()
    assert [i.id for i in items] == ["q-000", "q-001", "q-002"]
    assert calls == [("Sakshi113/MMAU", "dataset"), ("gamma-lab-umd/MMAU-test-mini", "dataset")]
    assert "-unpacked" in items[0].audio and read_item_audio(items[0], 16000, None)[0].shape == (24000,)
    assert [i.id for i in load_mmau()] == ["q-000", "q-001", "q-002"]  # unpacked once, reused


def test_truncation_to_the_backbone_limit(tmp_path):
    item = load_mmau(make_mmau(tmp_path, n=1))[0]
    wave, truncated = read_item_audio(item, 16000, 1.0)
    assert truncated and wave.shape == (16000,)


@pytest.mark.parametrize(
    "make, loader, match",
    [
        (lambda p: p, load_clotho, "clotho_captions_evaluation.csv"),
        (lambda p: p, load_audiocaps, "test.csv"),
        (lambda p: p, load_mmau, "mmau-test-mini.json"),
    ],
)
def test_folders_in_the_wrong_format(tmp_path, make, loader, match):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(DatasetFormatError, match=match):
        loader(make(tmp_path))


def test_missing_columns_and_audio_are_named(tmp_path):
    (tmp_path / "clotho_captions_evaluation.csv").write_text("name,text\nx.wav,hello\n")
    with pytest.raises(DatasetFormatError, match=r"lacks column\(s\) \['file_name', 'caption_1'\]"):
        load_clotho(tmp_path)
    folder = make_clotho(tmp_path / "c", n=2)
    (folder / "evaluation" / "clip 01.wav").unlink()
    with pytest.raises(DatasetFormatError, match="clip 01.wav"):
        load_clotho(folder)
    mmau = make_mmau(tmp_path / "m", n=2)
    (mmau / "test-mini-audios" / "q-001.wav").unlink()
    with pytest.raises(DatasetFormatError, match="q-001.wav"):
        load_mmau(mmau)


def test_mmau_question_without_required_fields(tmp_path):
    (tmp_path / "mmau-test-mini.json").write_text(json.dumps([{"id": "x", "question": "?"}]))
    with pytest.raises(DatasetFormatError, match="lacks"):
        load_mmau(tmp_path)


def test_duplicate_ids_and_undecodable_audio(tmp_path):
    with pytest.raises(DatasetFormatError, match="unique"):
        check_unique_ids([EvalItem("a", None), EvalItem("a", None)], "x")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(AudioInputError, match="Item 'k'"):
        read_item_audio(EvalItem("k", str(bad)), 16000, None)


def test_lazy_audio_is_read_on_demand():
    calls = []

    def source():
        calls.append(1)
        return {"array": np.zeros(800, dtype=np.float32), "sampling_rate": 8000}

    item = EvalItem("lazy", source)
    assert not calls
    assert read_item_audio(item, 16000, None)[0].shape == (1600,)
    assert calls == [1]


def test_hub_dataset_without_audio_column(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict({"text": ["x"]}))
    with pytest.raises(DatasetFormatError, match="no 'audio' column"):
        data._hub_dataset("some/id", "test")


def test_missing_folders_and_unreachable_hub_copies(tmp_path):
    for loader in (load_clotho, load_audiocaps, load_mmau):
        with pytest.raises(DataSourceError, match="does not exist"):
            loader(str(tmp_path / "absent"))
    # the tests run with HF_HUB_OFFLINE=1: the public copies cannot be reached
    with pytest.raises(DataSourceError, match="hub id 'mteb/Clotho'.*--data PATH"):
        load_clotho()
    with pytest.raises(DataSourceError, match="hub id 'Sakshi113/MMAU'.*--data PATH"):
        load_mmau()


@pytest.mark.parametrize("level", ["parent", "LibriSpeech", "subset"])
def test_librispeech_release_tree_from_any_level(tmp_path, level):
    make_librispeech(tmp_path, "test-other", n=5)
    folder = {"parent": tmp_path, "LibriSpeech": tmp_path / "LibriSpeech"}.get(
        level, tmp_path / "LibriSpeech" / "test-other"
    )
    items = load_librispeech(folder, "test-other")
    assert [i.id for i in items] == [
        "1089-134686-0000",
        "1089-134686-0002",
        "1089-134686-0004",
        "1090-134687-0001",
        "1090-134687-0003",
    ]
    assert items[0].references == [TRANSCRIPTS[0]] and items[3].references == [TRANSCRIPTS[1]]
    wave, _ = read_item_audio(items[3], 16000, None)
    assert wave.shape == (20000,)  # 1.25 s of FLAC at 16 kHz


def test_librispeech_hub_copy(tmp_path):
    items = load_librispeech(make_hub_librispeech(tmp_path, n=3), "test-clean")
    assert [i.id for i in items] == ["1089-134686-0000", "1089-134686-0001", "1089-134686-0002"]
    assert items[2].references == [TRANSCRIPTS[2]]
    assert read_item_audio(items[1], 16000, None)[0].shape == (16000,)


def test_librispeech_hub_copy_is_read_by_condition(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(repo_id, name=None, split=None):
        calls.append((repo_id, name, split))
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    for subset, config in (("test-clean", "clean"), ("test-other", "other")):
        with pytest.raises(DataSourceError, match=f"config '{config}' split 'test'.*--data PATH"):
            load_librispeech(subset=subset)
    assert calls == [("openslr/librispeech_asr", "clean", "test"), ("openslr/librispeech_asr", "other", "test")]


def test_librispeech_folders_that_cannot_be_read(tmp_path):
    with pytest.raises(ValueError, match="`subset` must be one of .*'test-clean', 'test-other'.*got 'dev-clean'"):
        load_librispeech(tmp_path, "dev-clean")
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(DatasetFormatError, match="test-clean/<speaker>/<chapter>"):
        load_librispeech(tmp_path, "test-clean")
    folder = make_librispeech(tmp_path / "l", n=2)
    next((folder / "LibriSpeech").rglob("1090-134687-0001.flac")).unlink()
    with pytest.raises(DatasetFormatError, match="1090-134687-0001"):
        load_librispeech(folder)
    with pytest.raises(DataSourceError, match="does not exist"):
        load_librispeech(tmp_path / "absent")
