import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from hf_ltbm.cli import main

from ..conftest import write_clip

TINY = ["--model", "tiny-random-qwen2-audio"]


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    write_clip(folder / "a.wav", 3)
    write_clip(folder / "sub" / "b.mp3", 5, rate=44100, channels=2)
    write_clip(folder / "c.ogg", 2)
    write_clip(tmp_path / "d.flac", 1)
    return folder


def test_folders_and_files_batched_to_jsonl(clips, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    args = ["generate", str(clips), str(tmp_path / "d.flac"), *TINY, "--batch-size", "2", "--max-new-tokens", "3"]
    assert main([*args, "--output", str(out), "--no-progress"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["audio"].split("/")[-1] for r in records] == ["a.wav", "c.ogg", "b.mp3", "d.flac"]
    assert [r["audio_tokens_before"] for r in records] == [75, 50, 125, 25]
    assert [r["audio_tokens_after"] for r in records] == [38, 25, 63, 13]
    assert [r["batch_size"] for r in records] == [2, 2, 2, 2]
    assert all(r["prefill_s"] > 0 and r["generated_text"] for r in records)
    assert records[0]["audio_token_merge"]["method"] == "ltbm" and records[0]["duration_s"] == 3.0
    stdout = capsys.readouterr().out
    assert "a.wav (75 -> 38 audio tokens" in stdout
    assert "4 clip(s), setting ltbm(keep_ratio=0.5, window=3): 275 -> 139 audio tokens" in stdout


def test_merge_none_and_method_options(clips, tmp_path, capsys):
    assert main(["generate", str(clips / "a.wav"), *TINY, "--merge", "none", "--max-new-tokens", "2"]) == 0
    assert "(75 -> 75 audio tokens" in capsys.readouterr().out
    args = ["generate", str(clips / "a.wav"), *TINY, "--merge", "segment_topk", "--keep-ratio", "0.2"]
    assert main([*args, "--option", "num_segments=3", "--option", "score=norm", "--max-new-tokens", "2"]) == 0
    assert "(75 -> 15 audio tokens" in capsys.readouterr().out


def test_the_stock_and_the_merged_prompt_give_the_same_text(clips, tmp_path):
    """The CLI's merging processor (M placeholders) agrees with the pipeline on a stock prompt (compacted)."""
    out = tmp_path / "o.jsonl"
    assert main(["generate", str(clips / "a.wav"), *TINY, "--output", str(out), "--max-new-tokens", "4"]) == 0
    record = json.loads(out.read_text())
    from transformers import pipeline

    from hf_ltbm.tiny import build_tiny_model

    model, processor = build_tiny_model(audio_token_merge={"method": "ltbm", "keep_ratio": 0.5})
    processor.set_audio_token_merge(None)
    (result,) = pipeline("audio-text-to-text", model=model, processor=processor)(
        str(clips / "a.wav"), text=record["prompt"], max_new_tokens=4
    )
    assert result["generated_text"] == record["generated_text"]


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("missing", 1, "does not exist"),
        ("undecodable", 1, "Could not decode audio file"),
        ("empty", 1, "is empty (0 samples)"),
        ("too_long", 1, "is 31.0 s long; this model takes at most 30 s per clip. Cut it"),
        ("empty_folder", 1, "holds no audio files"),
        ("unknown_model", 2, "Could not load model"),
        ("unsupported_model", 2, "is a 'bert' model; hf-ltbm supports qwen2_audio, audioflamingo3"),
        ("bad_method", 2, "bad merge setting: Unknown `method` 'foo'"),
        ("bad_ratio", 2, "bad merge setting: `keep_ratio` must be in (0, 1]"),
        ("bad_window", 2, "`window` must be an int >= 1, got 0"),
        ("window_for_pool", 2, "--window 5 only applies to method 'ltbm', which is not among ['pool']"),
        ("seed_for_ltbm", 2, "--seed 3 only applies to method 'random', which is not among ['ltbm']"),
        ("bad_option", 2, "--option expects KEY=VALUE"),
        ("bad_batch", 2, "--batch-size must be >= 1"),
    ],
)
def test_bad_inputs_exit_non_zero_with_a_clear_message(tmp_path, capsys, case, code, message):
    good = tmp_path / "good.wav"
    write_clip(good, 1)
    audio, extra = [str(good)], []
    if case == "missing":
        audio = [str(tmp_path / "nope.wav")]
    elif case == "undecodable":
        (tmp_path / "bad.wav").write_text("not audio")
        audio = [str(tmp_path / "bad.wav")]
    elif case == "empty":
        sf.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.float32), 16000)
        audio = [str(tmp_path / "empty.wav")]
    elif case == "too_long":
        write_clip(tmp_path / "long.wav", 31)
        audio = [str(tmp_path / "long.wav")]
    elif case == "empty_folder":
        (tmp_path / "nothing").mkdir()
        audio = [str(tmp_path / "nothing")]
    model = ["--model", "tiny-random-qwen2-audio"]
    if case == "unknown_model":
        model = ["--model", str(tmp_path / "no-such-model")]
    elif case == "unsupported_model":
        (tmp_path / "bert").mkdir()
        (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
        model = ["--model", str(tmp_path / "bert")]
    extra = {
        "bad_method": ["--merge", "foo"],
        "bad_ratio": ["--keep-ratio", "0"],
        "bad_window": ["--window", "0"],
        "window_for_pool": ["--merge", "pool", "--window", "5"],
        "seed_for_ltbm": ["--merge", "ltbm", "--seed", "3"],
        "bad_option": ["--option", "oops"],
        "bad_batch": ["--batch-size", "0"],
    }.get(case, [])
    assert main(["generate", *audio, *model, *extra, "--max-new-tokens", "1", "--no-progress"]) == code
    assert message in capsys.readouterr().err


def test_audio_flamingo_3_takes_long_clips_in_windows(tmp_path, capsys):
    write_clip(tmp_path / "long.wav", 31)
    args = ["generate", str(tmp_path / "long.wav"), "--model", "tiny-random-audioflamingo3", "--max-new-tokens", "1"]
    assert main(args) == 0
    assert "(775 -> 388 audio tokens" in capsys.readouterr().out  # 750 + 25 tokens in two windows


def test_console_script_exit_codes(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "hf_ltbm", "generate", str(tmp_path / "x.wav"), *TINY], capture_output=True, text=True
    )
    assert ok.returncode == 1 and "does not exist" in ok.stderr
    usage = subprocess.run([sys.executable, "-m", "hf_ltbm", "generate"], capture_output=True, text=True)
    assert usage.returncode == 2 and "required" in usage.stderr


def test_size_aware_flag(clips, tmp_path):
    out = tmp_path / "sa.jsonl"
    args = ["generate", str(clips / "a.wav"), *TINY, "--size-aware", "--keep-ratio", "0.25", "--output", str(out)]
    assert main([*args, "--max-new-tokens", "2"]) == 0
    assert json.loads(out.read_text())["audio_token_merge"]["size_aware_attention"] is True


def test_preserve_norm_flag(clips, tmp_path, capsys):
    out = tmp_path / "pn.jsonl"
    args = ["generate", str(clips / "a.wav"), *TINY, "--preserve-norm", "--keep-ratio", "0.25", "--output", str(out)]
    assert main([*args, "--max-new-tokens", "2"]) == 0
    assert json.loads(out.read_text())["audio_token_merge"]["preserve_norm"] is True
    refused = ["generate", str(clips / "a.wav"), *TINY, "--merge", "prune_norm", "--preserve-norm"]
    assert main([*refused, "--output", str(tmp_path / "no.jsonl")]) == 2
    assert "`preserve_norm=True` rescales averaged tokens; method 'prune_norm'" in capsys.readouterr().err
