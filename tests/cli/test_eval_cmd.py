import json
import sys

import pytest

from hf_ltbm.cli import main
from hf_ltbm.evaluation import captioning
from hf_ltbm.tiny import TINY_MODELS

from ..evaluation.fixtures import make_librispeech, make_mmau

MODEL = "tiny-random-qwen2-audio"


@pytest.fixture(scope="module")
def mmau_dir(tmp_path_factory):
    return make_mmau(tmp_path_factory.mktemp("mmau"), n=3)


def test_eval_then_report(mmau_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["eval", "--model", MODEL, "--task", "mmau", "--data", str(mmau_dir), "--methods", "none,ltbm,prune_norm"]
    args += ["--keep-ratios", "0.5", "--windows", "2", "--size-aware", "both", "--max-new-tokens", "4"]
    args += ["--batch-size", "2", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "4 run(s)" in printed and "| ltbm | keep 0.5, w 2, size-aware |" in printed
    names = sorted(p.name for p in (out / MODEL / "mmau").iterdir())
    assert names == ["ltbm_keep0.5_w2", "ltbm_keep0.5_w2_sizeaware", "none", "prune_norm_keep0.5"]
    config = json.loads((out / MODEL / "mmau" / "ltbm_keep0.5_w2_sizeaware" / "config.json").read_text())
    assert config["audio_token_merge"]["size_aware_attention"] is True and config["audio_token_merge"]["window"] == 2
    assert config["device"] == "cpu" and config["dtype"] == "float32"

    assert main(args) == 0  # everything finished: all skipped
    assert "(4 finished earlier and skipped, 0 resumed" in capsys.readouterr().out

    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "# Evaluation results" in printed
    for name in ("results.md", "results.csv", "results_wide.csv", "tiny-random-qwen2-audio_metric_vs_keep_ratio.png"):
        assert (out / name).is_file(), name


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "coco"], "--task 'coco': choose among clotho, audiocaps, mmau, librispeech_test_clean"),
        (["--task", "librispeech_test_clean", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
        (["--task", "mmau", "--keep-ratios", "0.5,x"], "--keep-ratios expects comma-separated numbers"),
        (["--task", "mmau", "--keep-ratios", "2"], "Keep ratios must be in (0, 1]"),
        (["--task", "mmau", "--methods", "ltbm,magic"], "Unknown method(s) ['magic']"),
        (["--task", "mmau", "--windows", "a"], "--windows expects comma-separated integers"),
        (["--task", "mmau,clotho", "--data", "/x"], "TASK=VALUE"),
        (["--task", "mmau", "--methods", "global", "--windows", "2"], "'ltbm' is not among the methods"),
        (["--task", "mmau", "--prompt", "mmau=no placeholders"], "{question}"),
        (["--task", "mmau", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["--task", "mmau", "--limit", "0"], "--limit must be >= 1"),
        (["--task", "mmau", "--prompt", "no placeholders"], "{question}"),
        (["--task", "mmau", "--option", "num_segments=4"], "not options of any"),
        (["--task", "mmau", "--data", "/does/not/exist"], "MMAU data '/does/not/exist' does not exist"),
        (["--task", "mmau", "--data", "mmau=/a", "--data", "mmau=/b"], "--data was given twice for mmau: 'mmau=/a'"),
        (["--task", "mmau", "--prompt", "{question} {choices}", "--prompt", "mmau=x"], "--prompt was given twice"),
    ],
)
def test_bad_command_lines_exit_2(extra, message, capsys, tmp_path):
    assert main(["eval", "--model", MODEL, "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_captioning_without_java_fails_before_loading_anything(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(captioning.shutil, "which", lambda name: None)
    assert main(["eval", "--model", MODEL, "--task", "clotho", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "Java" in capsys.readouterr().err
    assert not (tmp_path / MODEL).exists()


def test_speech_recognition_without_jiwer_names_the_extra_before_loading_anything(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "jiwer", None)
    args = ["eval", "--model", MODEL, "--task", "librispeech_test_clean", "--data", str(tmp_path)]
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert "needs jiwer: pip install 'hf-ltbm[eval]'" in capsys.readouterr().err
    assert not (tmp_path / MODEL).exists()


def test_speech_recognition_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("jiwer")
    folder = make_librispeech(tmp_path / "ls", "test-clean", n=2)
    args = ["eval", "--model", MODEL, "--task", "librispeech_test_clean", "--data", str(folder), "--methods", "global"]
    args += ["--keep-ratios", "0.5", "--max-new-tokens", "3", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(args) == 0
    assert "| global | keep 0.5 |" in capsys.readouterr().out
    path = tmp_path / "runs" / MODEL / "librispeech_test_clean" / "global_keep0.5"
    metrics = json.loads((path / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"WER", "CER"}
    assert json.loads((path / "config.json").read_text())["generation"]["max_new_tokens"] == 3
    assert main(["report", str(tmp_path / "runs")]) == 0
    assert "librispeech_test_clean WER" in capsys.readouterr().out
    assert (tmp_path / "runs" / f"{MODEL}_metric_vs_keep_ratio.png").stat().st_size > 0


def test_report_of_an_empty_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "No finished runs" in capsys.readouterr().err


def test_undecodable_item_audio_exits_1(tmp_path, capsys):
    folder = make_mmau(tmp_path / "mmau", n=2)
    (folder / "test-mini-audios" / "q-001.wav").write_bytes(b"not a wav file")
    args = ["eval", "--model", MODEL, "--task", "mmau", "--data", str(folder), "--methods", "none"]
    assert main([*args, "--out", str(tmp_path / "runs"), "--no-progress", "--max-new-tokens", "2"]) == 1
    assert "Item 'q-001'" in capsys.readouterr().err


@pytest.mark.parametrize("model", TINY_MODELS)
def test_size_aware_sweep_dimension_on_every_backbone(model, mmau_dir, tmp_path, capsys):
    args = ["eval", "--model", model, "--task", "mmau", "--data", str(mmau_dir), "--methods", "ltbm"]
    args += ["--keep-ratios", "0.5", "--size-aware", "both", "--limit", "2", "--max-new-tokens", "2"]
    assert main([*args, "--out", str(tmp_path), "--no-progress"]) == 0
    folder = tmp_path / model / "mmau"
    assert sorted(p.name for p in folder.iterdir()) == ["ltbm_keep0.5_w3", "ltbm_keep0.5_w3_sizeaware"]
    plain, aware = (
        json.loads((folder / n / "metrics.json").read_text()) for n in sorted(p.name for p in folder.iterdir())
    )
    assert (plain["size_aware"], aware["size_aware"]) == (False, True)
    # the same tokens reach the language model; only the attention bias differs
    assert plain["efficiency"]["audio_tokens_after_mean"] == aware["efficiency"]["audio_tokens_after_mean"]


def test_per_task_data_and_prompts(mmau_dir, tmp_path, capsys):
    args = ["eval", "--model", MODEL, "--task", "mmau", "--methods", "global", "--keep-ratios", "0.5"]
    args += ["--data", f"mmau={mmau_dir}", "--data", "clotho=/not/run/here", "--space", "projector"]
    args += ["--prompt", "clotho=Caption it.", "--prompt", "mmau=Q: {question} {choices}", "--limit", "1"]
    assert main([*args, "--max-new-tokens", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    path = tmp_path / MODEL / "mmau" / "global_keep0.5_projector"
    config = json.loads((path / "config.json").read_text())
    assert config["prompt"] == "Q: {question} {choices}" and config["audio_token_merge"]["space"] == "projector"
    assert config["dtype"] == "float32"


def _mmau_args(mmau_dir, out, methods="none,ltbm"):
    return ["eval", "--model", MODEL, "--task", "mmau", "--data", str(mmau_dir), "--methods", methods]


def test_score_only_rescores_saved_predictions_without_loading_the_model(mmau_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    common = ["--keep-ratios", "0.5", "--max-new-tokens", "3", "--batch-size", "2", "--out", str(out), "--no-progress"]
    assert main(_mmau_args(mmau_dir, out) + common) == 0
    metrics_path = out / MODEL / "mmau" / "none" / "metrics.json"
    original = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps({**original, "metrics": {"accuracy": -1.0}}))  # e.g. an older scorer's numbers
    capsys.readouterr()

    def no_weights(*args, **kwargs):
        raise AssertionError("--score-only loaded the model")

    monkeypatch.setattr("hf_ltbm.loading.load_model", no_weights)  # what `hf-ltbm eval` loads with
    assert main(_mmau_args(mmau_dir, out, "none,ltbm,pool") + common + ["--score-only"]) == 0
    printed = capsys.readouterr().out
    assert "2 run(s) rescored" in printed and "(1 without finished predictions)" in printed
    assert json.loads(metrics_path.read_text()) == original


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(mmau_dir, tmp_path, capsys, monkeypatch):
    from hf_ltbm.evaluation import runner

    args = _mmau_args(mmau_dir, tmp_path / "runs", "pool") + ["--keep-ratios", "0.5", "--max-new-tokens", "3"]
    args += ["--batch-size", "1", "--out", str(tmp_path / "runs"), "--no-progress"]
    clean = args[:-3] + ["--out", str(tmp_path / "clean"), "--no-progress"]
    assert main(clean) == 0
    real, calls = runner._run_batch, []

    def interrupted(*a, **k):
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C during the second batch
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(runner, "_run_batch", interrupted)
    capsys.readouterr()
    assert main(args) == 130
    assert "Interrupted. Finished batches are saved" in capsys.readouterr().err
    monkeypatch.setattr(runner, "_run_batch", real)
    assert main(args) == 0
    assert "1 resumed from an interrupted attempt" in capsys.readouterr().out
    path = ("mmau", "pool_keep0.5", "predictions.jsonl")
    resumed = (tmp_path / "runs" / MODEL).joinpath(*path).read_text()
    assert resumed == (tmp_path / "clean" / MODEL).joinpath(*path).read_text()


def test_preserve_norm_sweep_dimension(mmau_dir, tmp_path, capsys):
    args = ["eval", "--model", MODEL, "--task", "mmau", "--data", str(mmau_dir), "--methods", "pool,prune_norm"]
    args += ["--keep-ratios", "0.5", "--preserve-norm", "both", "--limit", "2", "--max-new-tokens", "2"]
    assert main([*args, "--out", str(tmp_path), "--no-progress"]) == 0
    folder = tmp_path / MODEL / "mmau"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["pool_keep0.5", "pool_keep0.5_norm", "prune_norm_keep0.5"]  # pruning has no such variant
    plain, norm = (json.loads((folder / n / "metrics.json").read_text()) for n in names[:2])
    assert (plain["preserve_norm"], norm["preserve_norm"]) == (False, True)
    config = json.loads((folder / "pool_keep0.5_norm" / "config.json").read_text())
    assert config["audio_token_merge"]["preserve_norm"] is True
    assert (
        "preserve_norm" not in json.loads((folder / "pool_keep0.5" / "config.json").read_text())["audio_token_merge"]
    )
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "| pool | keep 0.5, norm-preserving |" in printed and "| pool | keep 0.5 |" in printed


def test_speech_recognition_on_glmasr_uses_its_transcription_prompt_and_its_token_rate(tmp_path, capsys):
    """The librispeech task on GLM-ASR: its checkpoints' transcription request (`task_prompts`), and 12.5 tokens per
    second (utterances of 1.0 s and 1.25 s: 12 and 15 tokens, 6 and 8 at keep 0.5)."""
    pytest.importorskip("jiwer")
    model = "tiny-random-glmasr"
    folder = make_librispeech(tmp_path / "ls", "test-clean", n=2)
    args = ["eval", "--model", model, "--task", "librispeech_test_clean", "--data", str(folder), "--methods", "ltbm"]
    args += ["--keep-ratios", "0.5", "--max-new-tokens", "2", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(args) == 0
    path = tmp_path / "runs" / model / "librispeech_test_clean" / "ltbm_keep0.5_w3"
    config = json.loads((path / "config.json").read_text())
    assert "Please transcribe this audio into text" in json.dumps(config)
    efficiency = json.loads((path / "metrics.json").read_text())["efficiency"]
    assert efficiency["audio_tokens_before_mean"] == 13.5 and efficiency["audio_tokens_after_mean"] == 7.0
