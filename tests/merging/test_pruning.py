import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hf_ltbm.merging import merge_tokens, select_top


def test_keeps_highest_scores_in_temporal_order():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.8, 0.2]])
    out = merge_tokens(torch.randn(1, 5, 2), method="prune_attention", num_tokens=3, scores=scores)
    assert out.assignment.tolist() == [[-1, 0, 1, 2, -1]]


def test_ties_keep_earlier_tokens():
    out = merge_tokens(torch.randn(1, 6, 2), method="prune_attention", num_tokens=2, scores=torch.ones(1, 6))
    assert out.assignment.tolist() == [[0, 1, -1, -1, -1, -1]]


def test_norm_pruning_uses_feature_norm():
    x = torch.zeros(1, 4, 2)
    x[0, 1] = 5.0
    x[0, 3] = 2.0
    assert merge_tokens(x, method="prune_norm", num_tokens=2).assignment.tolist() == [[-1, 0, -1, 1]]


@given(n=st.integers(1, 300), m=st.integers(1, 300), s=st.integers(1, 400), seed=st.integers(0, 999))
def test_segment_quotas_are_exact_and_balanced(n, m, s, seed):
    m = min(m, n)
    scores = torch.rand(1, n, generator=torch.Generator().manual_seed(seed))
    a = select_top(scores, torch.tensor([n]), torch.tensor([m]), num_segments=s)[0]
    assert int((a >= 0).sum()) == m
    bounds = [(j * n) // s for j in range(s + 1)]
    for j in range(s):
        seg = slice(bounds[j], bounds[j + 1])
        kept = int((a[seg] >= 0).sum())
        quota = (m * bounds[j + 1]) // n - (m * bounds[j]) // n
        assert kept == quota <= bounds[j + 1] - bounds[j]
        if kept:  # the kept tokens of a segment are its best ones
            dropped = scores[0, seg][a[seg] < 0]
            assert float(scores[0, seg][a[seg] >= 0].min()) >= float(torch.cat([dropped, torch.tensor([-1.0])]).max())


def test_segment_topk_spreads_tokens_over_time():
    scores = torch.zeros(1, 100)
    scores[0, :10] = 1.0  # all the "important" tokens at the start
    glob = merge_tokens(torch.randn(1, 100, 2), method="prune_attention", num_tokens=10, scores=scores)
    seg = merge_tokens(torch.randn(1, 100, 2), method="segment_topk", num_tokens=10, scores=scores, num_segments=5)
    assert int(glob.assignment[0, :10].min()) == 0 and bool((glob.assignment[0, 10:] == -1).all())
    assert [int((seg.assignment[0, 20 * j : 20 * (j + 1)] >= 0).sum()) for j in range(5)] == [2] * 5


def test_segment_topk_norm_score_needs_no_scores():
    out = merge_tokens(torch.randn(1, 50, 4), method="segment_topk", keep_ratio=0.2, score="norm")
    assert out.lengths.tolist() == [10]


@pytest.mark.parametrize("bad, match", [({"num_segments": 0}, "num_segments"), ({"score": "entropy"}, "score")])
def test_segment_topk_validates_options(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        merge_tokens(torch.randn(1, 5, 2), method="segment_topk", keep_ratio=0.5, scores=torch.rand(1, 5), **bad)


def test_random_is_seeded_by_generator():
    x = torch.randn(2, 200, 4)

    def run(seed):
        return merge_tokens(
            x, method="random", keep_ratio=0.25, generator=torch.Generator().manual_seed(seed)
        ).assignment

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
