import pytest

from hf_ltbm.bench.end_to_end import SCALES, build_benchmark_model, run_end_to_end


def test_rows_columns_and_exact_kv_cache():
    rows = run_end_to_end("tiny", keep_ratios=(1.0, 0.5, 0.1), repeats=1, new_tokens=3, text_tokens=10)
    assert [r["setting"] for r in rows] == ["none", "ltbm(keep_ratio=0.5, window=3)", "ltbm(keep_ratio=0.1, window=3)"]
    assert [r["audio_tokens"] for r in rows] == [750, 375, 75]
    assert [r["prompt_tokens"] for r in rows] == [760, 385, 85]
    assert all(r["kv_exact"] for r in rows)
    assert rows[1]["kv_mb"] == pytest.approx(rows[0]["kv_mb"] * 385 / 760)
    assert rows[0]["merge_ms"] == 0 and rows[1]["merge_ms"] > 0
    assert rows[2]["ideal_speedup"] == pytest.approx(760 / 85)
    for r in rows:
        assert r["speedup_vs_ideal"] == pytest.approx(r["prefill_speedup"] / r["ideal_speedup"])
        assert r["decode_tok_s"] > 0 and r["peak_mb"] > 0


def test_seven_b_shapes_are_qwen2_audio_7b():
    s = SCALES["7b"]
    assert s["audio"]["d_model"] == 1280 and s["audio"]["encoder_layers"] == 32
    assert s["text"]["hidden_size"] == 4096 and s["text"]["num_hidden_layers"] == 32
    assert s["text"]["vocab_size"] == 156032
    with pytest.raises(ValueError, match="`scale` must be one of"):
        build_benchmark_model("huge", "cpu", None)


def test_size_aware_rows_measure_its_cost():
    rows = run_end_to_end("tiny", keep_ratios=(1.0, 0.5), repeats=1, new_tokens=2, text_tokens=4, size_aware=True)
    assert [r["setting"] for r in rows] == [
        "none",
        "ltbm(keep_ratio=0.5, window=3)",
        "ltbm(keep_ratio=0.5, window=3, size_aware_attention=True)",
    ]
    assert rows[1]["prompt_tokens"] == rows[2]["prompt_tokens"] and all(r["kv_exact"] for r in rows)
