import torch

from hf_ltbm.merging import merge_tokens, segment_ids


def test_segment_boundaries_follow_floor_formula():
    for n in range(1, 60):
        for m in range(1, n + 1):
            seg = segment_ids(n, torch.tensor([n]), torch.tensor([m]))[0]
            expected = torch.empty(n, dtype=torch.long)
            for j in range(m):
                expected[(j * n) // m : ((j + 1) * n) // m] = j
            assert torch.equal(seg, expected), (n, m)


def test_pool_averages_contiguous_segments():
    x = torch.arange(10, dtype=torch.float32).view(1, 10, 1)
    out = merge_tokens(x, method="pool", num_tokens=4)
    assert out.sizes.tolist() == [[2, 3, 2, 3]]
    assert out.tokens.flatten().tolist() == [0.5, 3.0, 5.5, 8.0]


def test_pool_is_content_agnostic():
    a = merge_tokens(torch.randn(2, 77, 3), [77, 40], method="pool", keep_ratio=0.3)
    b = merge_tokens(torch.randn(2, 77, 3), [77, 40], method="pool", keep_ratio=0.3)
    assert torch.equal(a.assignment, b.assignment)
