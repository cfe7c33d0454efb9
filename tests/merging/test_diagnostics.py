import torch

from hf_ltbm.merging import merge_tokens
from hf_ltbm.merging.diagnostics import group_spans, merge_stats


def test_group_spans():
    first, last = group_spans(torch.tensor([0, 0, 1, 0, -1, 2]), 3)
    assert first.tolist() == [0, 2, 5] and last.tolist() == [3, 2, 5]


def test_merge_stats_on_identity_and_merges():
    x = torch.randn(20, 4)
    ident = merge_stats(x, x, torch.arange(20))
    assert abs(ident["cosine"] - 1) < 1e-6 and ident["mean_span"] == 1 and ident["non_contiguous"] == 0
    stats = merge_stats(x, x[[0, 5]], torch.tensor([0] * 10 + [1] * 10))
    assert stats["mean_span"] == 10 and stats["max_span"] == 10


def test_pruned_tokens_are_represented_by_the_nearest_kept_token():
    x = torch.eye(4)
    stats = merge_stats(x, x[[0, 3]], torch.tensor([0, -1, -1, 1]))
    assert stats["cosine"] == 0.5  # tokens 1 and 2 are orthogonal to their nearest kept tokens


def test_global_merge_reaches_further_than_ltbm():
    x = torch.randn(1, 300, 16, generator=torch.Generator().manual_seed(0))
    spans = {}
    for name, kwargs in {"ltbm": {"window": 1}, "global": {"method": "global"}}.items():
        out = merge_tokens(x, keep_ratio=0.25, **kwargs)
        spans[name] = merge_stats(x[0], out.tokens[0], out.assignment[0])["mean_span"]
    assert spans["ltbm"] < spans["global"]
