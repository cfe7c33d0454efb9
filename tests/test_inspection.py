import numpy as np
import pytest
import torch

from hf_ltbm import AudioTokenMergeConfig, merge_tokens
from hf_ltbm.inspection import MergeMap, merge_maps
from hf_ltbm.merging.diagnostics import merge_stats
from hf_ltbm.tiny import build_tiny_model


def clip(seconds):
    return (0.1 * np.random.default_rng(0).standard_normal(int(16000 * seconds))).astype(np.float32)


def test_segments_cover_exactly_the_kept_frames_and_match_merge_stats():
    x = torch.randn(1, 90, 16)
    out = merge_tokens(x, method="ltbm", keep_ratio=0.3, window=5)
    setting = AudioTokenMergeConfig(method="ltbm", keep_ratio=0.3, window=5)
    merge_map = MergeMap(setting, [out.assignment[0]], 0.04, 30.0)
    covered = np.zeros(90, dtype=int)
    for start, end, token in merge_map.segments():
        frames = range(round(start / 0.04), round(end / 0.04))
        assert all(int(out.assignment[0, f]) == token for f in frames)
        covered[list(frames)] += 1
    assert (covered == 1).all()
    summary = merge_map.summary()
    stats = merge_stats(x[0], out.tokens[0, : int(out.lengths[0])], out.assignment[0])
    assert summary["tokens_before"] == 90 and summary["tokens_after"] == 27
    assert summary["mean_span_s"] == pytest.approx(stats["mean_span"] * 0.04)
    assert summary["max_span_s"] == pytest.approx(stats["max_span"] * 0.04)
    assert summary["non_contiguous"] == pytest.approx(stats["non_contiguous"])


def test_pruned_frames_are_left_out():
    a = torch.tensor([0, -1, -1, 1, 2, -1])
    merge_map = MergeMap(AudioTokenMergeConfig(method="prune_norm"), [a], 0.04, 30.0)
    assert merge_map.segments() == [
        (0.0, pytest.approx(0.04), 0),
        (pytest.approx(0.12), pytest.approx(0.16), 1),
        (pytest.approx(0.16), pytest.approx(0.2), 2),
    ]
    assert merge_map.tokens_after == 3


def test_maps_from_the_model_per_window_and_setting_restored():
    model, processor = build_tiny_model("tiny-random-audioflamingo3", audio_token_merge="pool")
    maps = merge_maps(model, processor, clip(32), ["ltbm", {"method": "global", "keep_ratio": 0.1}])
    assert [m.tokens_before for m in maps] == [800, 800]
    assert [len(m.assignments) for m in maps] == [2, 2]  # two 30 s windows
    assert [m.tokens_after for m in maps] == [375 + 25, 75 + 5]
    starts = [s for s, _, _ in maps[0].segments()]
    assert max(starts) > 30.0 and maps[0].seconds_per_token == pytest.approx(0.04)
    tokens = [t for _, _, t in maps[0].segments()]
    assert sorted(set(tokens)) == list(range(400))  # numbered across windows
    assert model.audio_token_merge.method == "pool"
    with pytest.raises(ValueError, match="needs merge settings"):
        merge_maps(model, processor, clip(1), [None])
