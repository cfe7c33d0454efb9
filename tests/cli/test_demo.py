import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from hf_ltbm.backbones import backbone_for
from hf_ltbm.cli import main
from hf_ltbm.cli.demo import ascii_map, map_legend, synthesise
from hf_ltbm.inspection import merge_maps
from hf_ltbm.tiny import TINY_MODELS, build_tiny_model

from ..models.tiny import frames_per_token


def test_demo_runs_offline_and_writes_its_files(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    code = main(
        ["demo", "--seconds", "4", "--methods", "none,ltbm,pool", "--repeats", "1", "--output-dir", str(out_dir)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out and "meaningless" in out
    assert "100 -> 100" in out and "100 -> 50" in out
    assert "ltbm(keep_ratio=0.5, window=3)" in out and "merge map, first 4 s" in out
    records = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert [r["setting"] for r in records] == ["none", "ltbm(keep_ratio=0.5, window=3)", "pool(keep_ratio=0.5)"]
    assert records[0]["llm_prompt_tokens"] - records[1]["llm_prompt_tokens"] == 50
    assert all(r["prefill_ms"] > 0 for r in records)
    assert (out_dir / "merges.png").stat().st_size > 1000
    wave, rate = sf.read(str(out_dir / "clip.wav"))
    assert rate == 16000 and len(wave) == 64000


def test_demo_on_a_given_file_and_on_audio_flamingo_3(tmp_path, capsys):
    path = tmp_path / "x.flac"
    sf.write(str(path), synthesise(3.0)[0], 16000)
    args = ["demo", "--model", "tiny-random-audioflamingo3", "--audio", str(path), "--methods", "global"]
    assert main([*args, "--repeats", "1", "--output-dir", str(tmp_path / "o")]) == 0
    assert "75 -> 38" in capsys.readouterr().out


def test_demo_errors(tmp_path, capsys):
    assert main(["demo", "--keep-ratio", "1.5", "--output-dir", str(tmp_path)]) == 2
    assert "`keep_ratio` must be in (0, 1]" in capsys.readouterr().err
    assert main(["demo", "--audio", str(tmp_path / "nope.wav"), "--output-dir", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["demo", "--seconds", "31", "--output-dir", str(tmp_path)]) == 1
    assert "31.0 s long; this model takes at most 30 s" in capsys.readouterr().err


def test_synthesised_clip_is_deterministic_and_bounded():
    a, timeline = synthesise(5.0)
    b, _ = synthesise(5.0)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 80000 and np.abs(a).max() <= 1.0 and timeline[0] == (0.0, "440 Hz tone")


def test_console_entry_point_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hf_ltbm", "demo", "--seconds", "2", "--methods", "pool", "--repeats", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pool(keep_ratio=0.5)" in proc.stdout and (tmp_path / "hf-ltbm-demo" / "results.jsonl").exists()


@pytest.mark.parametrize("name", TINY_MODELS)
def test_the_merge_map_legend_states_each_backbones_own_token_duration(name):
    """The legend's time per character is the backbone's real token rate: a 30 s clip's encoder tokens over 30 s
    (40 ms for the Whisper-style encoders, 80 ms for Voxtral's and GLM-ASR's 12.5 tokens per second)."""
    model, processor = build_tiny_model(name)
    audio = synthesise(30.0)[0]
    (merge_map,) = merge_maps(model, processor, audio, [{"method": "pool", "keep_ratio": 0.5}])
    ms_per_token = 30000 / merge_map.tokens_before
    assert ms_per_token == {4: 40, 8: 80}[frames_per_token(backbone_for(model).model_type)]
    assert f"one character per {ms_per_token:g} ms encoder token" in map_legend(merge_map, 4.0)
    assert len(ascii_map(merge_map, 4.0)) == 4000 / ms_per_token


def test_demo_preserve_norm_for_its_averaging_methods(tmp_path, capsys):
    args = ["demo", "--seconds", "2", "--methods", "none,pool,prune_norm", "--preserve-norm", "--repeats", "1"]
    assert main([*args, "--max-new-tokens", "2", "--output-dir", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["setting"] for r in records] == [
        "none",
        "pool(keep_ratio=0.5, preserve_norm=True)",
        "prune_norm(keep_ratio=0.5)",
    ]
    capsys.readouterr()
    assert main(["demo", "--methods", "none,prune_norm", "--preserve-norm", "--output-dir", str(tmp_path)]) == 2
    assert "--preserve-norm applies to the averaging methods" in capsys.readouterr().err
