import json

import pytest

from hf_ltbm.cli import main

from ..conftest import write_clip


@pytest.mark.parametrize("view", ["mel", "waveform"])
def test_png_and_summary_per_method(tmp_path, capsys, view):
    audio = tmp_path / "a.wav"
    write_clip(audio, 4)
    png = tmp_path / "map.png"
    args = ["inspect", str(audio), "--model", "tiny-random-qwen2-audio", "--methods", "ltbm,global,pool,prune_norm"]
    assert main([*args, "--keep-ratio", "0.25", "--view", view, "--output", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.stat().st_size > 5000
    for name in ("ltbm(keep_ratio=0.25, window=3)", "global(keep_ratio=0.25)", "pool(keep_ratio=0.25)"):
        assert name in out
    assert out.count("100 -> 25") == 4 and f"merge map written to {png}" in out


def test_json_summaries_and_default_output_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_clip(tmp_path / "clip.flac", 2)
    args = ["inspect", "clip.flac", "--model", "tiny-random-audioflamingo3", "--methods", "ltbm,pool", "--json"]
    assert main([*args, "--window", "8"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["setting"] for r in rows] == ["ltbm(keep_ratio=0.5, window=8)", "pool(keep_ratio=0.5)"]
    assert rows[1] == {
        "setting": "pool(keep_ratio=0.5)",
        "tokens_before": 50,
        "tokens_after": 25,
        "mean_span_s": pytest.approx(0.08),
        "max_span_s": pytest.approx(0.08),
        "non_contiguous": 0.0,
    }
    assert (tmp_path / "clip_merges.png").stat().st_size > 5000


def test_errors(tmp_path, capsys):
    write_clip(tmp_path / "a.wav", 1)
    base = ["inspect", str(tmp_path / "a.wav"), "--model", "tiny-random-qwen2-audio"]
    assert main([*base, "--methods", "none,ltbm"]) == 2
    assert "'none' merges nothing" in capsys.readouterr().err
    assert main([*base, "--methods", ","]) == 2
    assert "--methods is empty" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "b.wav"), "--model", "tiny-random-qwen2-audio"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_preserve_norm_applies_to_the_averaging_methods(tmp_path, capsys):
    write_clip(tmp_path / "a.wav", 2)
    base = ["inspect", str(tmp_path / "a.wav"), "--model", "tiny-random-qwen2-audio", "--json", "--preserve-norm"]
    assert main([*base, "--methods", "ltbm,prune_norm"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["setting"] for r in rows] == [
        "ltbm(keep_ratio=0.5, window=3, preserve_norm=True)",
        "prune_norm(keep_ratio=0.5)",  # pruning keeps its tokens as they are
    ]
    assert main([*base, "--methods", "prune_norm,random"]) == 2
    assert "--preserve-norm applies to the averaging methods" in capsys.readouterr().err
