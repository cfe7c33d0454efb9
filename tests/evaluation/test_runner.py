import json
import os
import subprocess
import sys

import pytest

from hf_ltbm.evaluation import runner
from hf_ltbm.evaluation.runner import RunSpec, evaluate, expand_sweep, model_slug, read_jsonl
from hf_ltbm.evaluation.tasks import get_task
from hf_ltbm.tiny import build_tiny_model

from .fixtures import make_clotho, make_librispeech, make_mmau

MODEL = "tiny-random-qwen2-audio"


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_model(MODEL)


@pytest.fixture(scope="module")
def mmau_dir(tmp_path_factory):
    return make_mmau(tmp_path_factory.mktemp("mmau"), n=5)


def run_mmau(tiny, folder, out, specs, **kwargs):
    model, processor = tiny
    kwargs = {"batch_size": 2, "max_new_tokens": 4, "show_progress": False, **kwargs}
    return evaluate(model, processor, get_task("mmau", folder), specs, out, model_name=MODEL, **kwargs)


# --------------------------------------------------------------------------------------------------- sweeps
def test_expand_sweep_grid():
    specs = expand_sweep(["none", "ltbm", "global", "prune_norm"], [0.5, 0.25], [1, 4], size_aware="both")
    names = [s.name for s in specs]
    assert names[0] == "none"
    assert [n for n in names if n.startswith("ltbm")] == [
        "ltbm_keep0.5_w1",
        "ltbm_keep0.5_w1_sizeaware",
        "ltbm_keep0.5_w4",
        "ltbm_keep0.5_w4_sizeaware",
        "ltbm_keep0.25_w1",
        "ltbm_keep0.25_w1_sizeaware",
        "ltbm_keep0.25_w4",
        "ltbm_keep0.25_w4_sizeaware",
    ]
    assert [n for n in names if n.startswith("global")] == [
        "global_keep0.5",
        "global_keep0.5_sizeaware",
        "global_keep0.25",
        "global_keep0.25_sizeaware",
    ]
    # pruning keeps sizes 1: no size-aware variant
    assert [n for n in names if n.startswith("prune")] == ["prune_norm_keep0.5", "prune_norm_keep0.25"]
    assert len(names) == len(set(names)) == 1 + 8 + 4 + 2


def test_expand_sweep_settings_and_options():
    specs = expand_sweep(["ltbm", "segment_topk"], [0.5], None, options={"num_segments": 5})
    assert specs[0].window == 3 and specs[0].setting().window == 3  # the default window
    assert specs[1].name == "segment_topk_keep0.5_num_segments5"
    assert specs[1].setting().options == {"num_segments": 5}
    assert specs[0].setting().options == {}
    assert expand_sweep(["ltbm"], [0.5], size_aware="on")[0].setting().size_aware_attention
    keyed = expand_sweep(["ltbm", "pool"], [0.5], space="projector", key_source="encoder_keys")
    assert [s.name for s in keyed] == ["ltbm_keep0.5_w3_projector_encoder_keys", "pool_keep0.5_projector"]
    assert keyed[1].setting().key_source == "features"  # pooling compares nothing
    assert RunSpec("none").setting() is None


@pytest.mark.parametrize(
    "args, match",
    [
        ((["magic"], [0.5]), "Unknown method"),
        ((["ltbm", "ltbm"], [0.5]), "repeats"),
        ((["ltbm"], []), "keep_ratios"),
        ((["ltbm"], [1.5]), r"Keep ratios must be in \(0, 1\], got \[1.5\]"),
        ((["ltbm"], [0.5], [0]), "Windows must be positive"),
        ((["ltbm"], [0.5], None, "maybe"), "size_aware"),
        ((["ltbm"], [0.5], None, "off", None, "maybe"), "preserve_norm"),
        ((["ltbm"], [0.5], None, "off", {"num_segments": 3}), "not options of any"),
        ((["global"], [0.5], [4]), "'ltbm' is not among the methods"),
    ],
)
def test_expand_sweep_errors(args, match):
    if len(args) > 5:  # `preserve_norm` is keyword-only
        args, kwargs = args[:5], {"preserve_norm": args[5]}
    else:
        kwargs = {}
    with pytest.raises(ValueError, match=match):
        expand_sweep(*args, **kwargs)


def test_expand_sweep_preserve_norm_dimension():
    specs = expand_sweep(["ltbm", "prune_norm"], [0.5], size_aware="both", preserve_norm="both")
    assert [s.name for s in specs] == [
        "ltbm_keep0.5_w3",
        "ltbm_keep0.5_w3_norm",
        "ltbm_keep0.5_w3_sizeaware",
        "ltbm_keep0.5_w3_sizeaware_norm",
        "prune_norm_keep0.5",  # pruning keeps its tokens: no variant
    ]
    assert [s.setting().preserve_norm for s in specs] == [False, True, False, True, False]
    assert [s.record()["preserve_norm"] for s in specs] == [False, True, False, True, False]
    assert [s.name for s in expand_sweep(["pool"], [0.5], preserve_norm="on")] == ["pool_keep0.5_norm"]


def test_model_slug(tmp_path):
    assert model_slug("Qwen/Qwen2-Audio-7B-Instruct") == "Qwen__Qwen2-Audio-7B-Instruct"
    assert model_slug(str(tmp_path)) == tmp_path.name


def test_read_jsonl_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "predi')
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


# ----------------------------------------------------------------------------------------------------- runs
def test_run_folder_contents(tiny, mmau_dir, tmp_path):
    specs = [RunSpec("none"), RunSpec("ltbm", 0.5, 3)]
    results = run_mmau(tiny, mmau_dir, tmp_path, specs)
    assert [r.path.name for r in results] == ["none", "ltbm_keep0.5_w3"]
    path = tmp_path / MODEL / "mmau" / "ltbm_keep0.5_w3"
    assert sorted(p.name for p in path.iterdir()) == [
        "batches.jsonl",
        "config.json",
        "metrics.json",
        "mmau_predictions.json",
        "predictions.jsonl",
    ]
    config = json.loads((path / "config.json").read_text())
    assert config["audio_token_merge"]["method"] == "ltbm" and config["audio_token_merge"]["keep_ratio"] == 0.5
    assert config["generation"] == {"do_sample": False, "num_beams": 1, "max_new_tokens": 4}
    assert config["dtype"] == "float32" and isinstance(config["model_generation_config"], dict)
    assert config["source"] == str(mmau_dir) and "{question}" in config["prompt"] and config["num_items"] == 5
    predictions = read_jsonl(path / "predictions.jsonl")
    assert [p["id"] for p in predictions] == [f"q-{i:03d}" for i in range(5)]
    assert all(p["audio_tokens_after"] < p["audio_tokens_before"] for p in predictions)
    assert {"answer", "choices", "task", "difficulty", "prediction"} <= set(predictions[0])
    batches = read_jsonl(path / "batches.jsonl")
    assert [b["batch_size"] for b in batches] == [2, 2, 1]
    assert all(b["prefill_s"] > 0 and b["peak_memory_bytes"] > 0 for b in batches)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["run"] == "ltbm_keep0.5_w3" and metrics["num_items"] == 5
    assert 0 <= metrics["metrics"]["accuracy"] <= 100
    efficiency = metrics["efficiency"]
    assert efficiency["audio_tokens_kept"] == pytest.approx(
        sum(p["audio_tokens_after"] for p in predictions) / sum(p["audio_tokens_before"] for p in predictions)
    )
    assert efficiency["batches"] == 3 and efficiency["truncated_clips"] == 0
    base = read_jsonl(tmp_path / MODEL / "mmau" / "none" / "predictions.jsonl")
    assert all(p["audio_tokens_after"] == p["audio_tokens_before"] for p in base)


def test_the_model_setting_is_restored(tiny, mmau_dir, tmp_path):
    model, _ = tiny
    before = model.audio_token_merge
    run_mmau(tiny, mmau_dir, tmp_path, [RunSpec("global", 0.25)], limit=1)
    assert model.audio_token_merge == before


def test_finished_runs_are_skipped(tiny, mmau_dir, tmp_path, monkeypatch):
    run_mmau(tiny, mmau_dir, tmp_path, [RunSpec("none")], limit=2)
    monkeypatch.setattr(runner, "_run_batch", lambda *a, **k: pytest.fail("a finished run was run again"))
    (result,) = run_mmau(tiny, mmau_dir, tmp_path, [RunSpec("none")], limit=2)
    assert result.skipped and result.metrics["num_items"] == 2


def test_resume_after_an_interruption(tiny, mmau_dir, tmp_path, monkeypatch):
    spec = [RunSpec("pool", 0.5)]
    run_mmau(tiny, mmau_dir, tmp_path / "clean", spec)
    clean = read_jsonl(tmp_path / "clean" / MODEL / "mmau" / "pool_keep0.5" / "predictions.jsonl")

    real = runner._run_batch
    calls = []

    def interrupted(*args, **kwargs):
        if len(calls) == 1:
            raise KeyboardInterrupt  # the job is killed during the second batch
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_run_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_mmau(tiny, mmau_dir, tmp_path / "resumed", spec)
    path = tmp_path / "resumed" / MODEL / "mmau" / "pool_keep0.5"
    assert not (path / "metrics.json").exists()
    assert [r["id"] for r in read_jsonl(path / "predictions.rank0.jsonl")] == ["q-000", "q-001"]
    with open(path / "predictions.rank0.jsonl", "a") as handle:
        handle.write('{"id": "q-002", "predic')  # a torn write at the moment of the kill

    done = []

    def counting(pipe, task, batch, *args, **kwargs):
        done.extend(item.id for item in batch)
        return real(pipe, task, batch, *args, **kwargs)

    monkeypatch.setattr(runner, "_run_batch", counting)
    (result,) = run_mmau(tiny, mmau_dir, tmp_path / "resumed", spec)
    assert done == ["q-002", "q-003", "q-004"]  # only what was missing
    assert result.resumed_items == 2
    assert read_jsonl(path / "predictions.jsonl") == clean
    assert not list(path.glob("*.rank*.jsonl"))
    assert len(read_jsonl(path / "batches.jsonl")) == 3


def test_a_folder_with_other_settings_is_not_reused(tiny, mmau_dir, tmp_path):
    run_mmau(tiny, mmau_dir, tmp_path, [RunSpec("none")], limit=1)
    with pytest.raises(ValueError, match="other settings.*max_new_tokens.*--overwrite"):
        run_mmau(tiny, mmau_dir, tmp_path, [RunSpec("none")], limit=1, max_new_tokens=5)
    (result,) = run_mmau(tiny, mmau_dir, tmp_path, [RunSpec("none")], limit=1, max_new_tokens=5, overwrite=True)
    assert not result.skipped
    config = json.loads((result.path / "config.json").read_text())
    assert config["generation"]["max_new_tokens"] == 5


def test_evaluate_argument_errors(tiny, mmau_dir, tmp_path):
    for kwargs, match in (
        ({"batch_size": 0}, "batch_size"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"limit": 0}, "limit"),
    ):
        with pytest.raises(ValueError, match=match):
            run_mmau(tiny, mmau_dir, tmp_path, [RunSpec("none")], **kwargs)


def test_captioning_run_end_to_end(tiny, tmp_path):
    pytest.importorskip("pycocoevalcap")
    if not __import__("shutil").which("java"):
        pytest.skip("captioning metrics need Java")
    model, processor = tiny
    folder = make_clotho(tmp_path / "clotho", n=3)
    (result,) = evaluate(
        model,
        processor,
        get_task("clotho", folder),
        [RunSpec("ltbm", 0.5, 2)],
        tmp_path / "runs",
        model_name=MODEL,
        batch_size=2,
        max_new_tokens=4,
        show_progress=False,
    )
    metrics = result.metrics
    assert set(metrics["metrics"]) >= {"BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}
    assert metrics["num_clips"] == 3
    if "SPICE" not in metrics["metrics"]:
        assert "SPICE" in metrics["unavailable"] and "SPIDEr" in metrics["unavailable"]
    records = read_jsonl(result.path / "predictions.jsonl")
    assert [len(r["references"]) for r in records] == [5, 5, 5]


@pytest.mark.parametrize(
    "backbone, prompt",
    [
        ("tiny-random-qwen2-audio", "Recognize the speech and give me the transcription."),
        ("tiny-random-audioflamingo3", "Transcribe the input speech."),
    ],
)
def test_speech_recognition_run_end_to_end(backbone, prompt, tmp_path):
    pytest.importorskip("jiwer")
    from hf_ltbm.evaluation.report import collect_runs, markdown

    model, processor = build_tiny_model(backbone)
    folder = make_librispeech(tmp_path / "ls", "test-other", n=3)
    results = evaluate(
        model,
        processor,
        get_task("librispeech_test_other", folder),
        [RunSpec("none"), RunSpec("ltbm", 0.5, 2)],
        tmp_path / "runs",
        model_name=backbone,
        batch_size=2,
        show_progress=False,
    )
    for result in results:
        config = json.loads((result.path / "config.json").read_text())
        assert config["prompt"] == prompt and config["generation"]["max_new_tokens"] == 256
        assert config["dataset"] == {"benchmark": "LibriSpeech test-other"}
        metrics = result.metrics
        assert set(metrics["metrics"]) == {"WER", "CER"} and metrics["num_items"] == 3
        assert metrics["counts"]["reference_words"] == 11 + 8 + 12  # the three fixture transcripts
        assert metrics["metrics"]["WER"] > 0  # random weights do not transcribe
        records = read_jsonl(result.path / "predictions.jsonl")
        assert [r["reference"] for r in records][0].startswith("HE HOPED THERE")
    ltbm = results[1].metrics["efficiency"]
    assert ltbm["audio_tokens_after_mean"] < results[0].metrics["efficiency"]["audio_tokens_after_mean"]
    report = markdown(collect_runs(tmp_path / "runs"))
    assert "librispeech_test_other WER" in report and "- Note: normalised without Whisper's" in report


# ------------------------------------------------------------------------------------------- data-parallel
def test_two_processes_match_one(mmau_dir, tmp_path):
    """A 2-process CPU run (torchrun, gloo) gives the same predictions and metrics as a plain process: 5 items on 2
    processes, so the padding repeats one item and the gather de-duplicates it."""
    command = [
        "eval", "--model", MODEL, "--task", "mmau", "--data", str(mmau_dir), "--methods", "none,ltbm",
        "--keep-ratios", "0.5", "--batch-size", "1", "--max-new-tokens", "4", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "hf_ltbm", *command, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = subprocess.run(
        [*launcher, "-m", "hf_ltbm", *command, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        start_new_session=True,  # the launcher signals its whole process group when it ends
        timeout=600,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    for name in ("none", "ltbm_keep0.5_w3"):
        one = tmp_path / "one" / MODEL / "mmau" / name
        two = tmp_path / "two" / MODEL / "mmau" / name
        assert read_jsonl(two / "predictions.jsonl") == read_jsonl(one / "predictions.jsonl")
        m1, m2 = (json.loads((p / "metrics.json").read_text()) for p in (one, two))
        assert m2["metrics"] == m1["metrics"] and m2["counts"] == m1["counts"]
        assert json.loads((two / "config.json").read_text())["num_processes"] == 2
        ranks = {b["rank"] for b in read_jsonl(two / "batches.jsonl")}
        assert ranks == {0, 1}
        assert sum(b["batch_size"] for b in read_jsonl(two / "batches.jsonl")) == 6  # 5 items + 1 padding repeat
    assert double.stdout.count("Full report") == 1  # only the main process prints


def test_an_option_given_at_its_default_resolves_to_the_run_without_it():
    from hf_ltbm.evaluation.runner import expand_sweep

    (explicit,) = expand_sweep(["segment_topk"], [0.5], options={"num_segments": 10})
    (implicit,) = expand_sweep(["segment_topk"], [0.5])
    assert explicit == implicit and explicit.name == "segment_topk_keep0.5"
    assert explicit.setting() == implicit.setting()
    (other,) = expand_sweep(["segment_topk"], [0.5], options={"num_segments": 4})
    assert other.name == "segment_topk_keep0.5_num_segments4"


def test_mmau_runs_record_the_dataset_and_write_the_official_evaluation_input(tiny, mmau_dir, tmp_path):
    import hashlib

    from hf_ltbm.evaluation.multiple_choice import string_match

    (result,) = run_mmau(tiny, mmau_dir, tmp_path, [RunSpec("pool", 0.5)])
    questions = mmau_dir / "mmau-test-mini.json"
    config = json.loads((result.path / "config.json").read_text())
    assert config["dataset"] == {
        "benchmark": "MMAU test-mini",
        "version": "unknown",  # a local copy whose name does not say its release
        "questions_file": "mmau-test-mini.json",
        "questions_sha256": hashlib.sha256(questions.read_bytes()).hexdigest(),
    }
    official = json.loads((result.path / "mmau_predictions.json").read_text())
    originals = {q["id"]: q for q in json.loads(questions.read_text())}
    predictions = {p["id"]: p["prediction"] for p in read_jsonl(result.path / "predictions.jsonl")}
    for entry in official:  # the benchmark's entry, plus the prediction under both keys the official tools use
        assert {k: v for k, v in entry.items() if k not in ("model_output", "model_prediction")} == originals[
            entry["id"]
        ]
        assert entry["model_output"] == entry["model_prediction"] == predictions[entry["id"]]
    hits = [string_match(e["answer"], e["model_output"], e["choices"]) for e in official]
    assert result.metrics["metrics"]["accuracy"] == 100.0 * sum(hits) / len(hits)


def test_the_mmau_release_is_read_from_the_hub_copy_or_the_file_name(tmp_path):
    from hf_ltbm.evaluation.data import mmau_dataset_info

    named = tmp_path / "mmau-test-mini-v05.15.25.json"
    named.write_text("[]")
    assert mmau_dataset_info(named, from_hub=False)["version"] == "v05.15.25"
    plain = tmp_path / "mmau-test-mini.json"
    plain.write_text("[]")
    assert mmau_dataset_info(plain, from_hub=True)["version"] == "v05.15.25"
    assert mmau_dataset_info(plain, from_hub=False)["version"] == "unknown"
