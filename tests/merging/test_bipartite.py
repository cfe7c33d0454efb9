import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hf_ltbm.merging import DEFAULT_WINDOW, merge_tokens, output_length

from .reference import groups_to_assignment, reference_bipartite


def _random(seed, b, n, d):
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 16, None])
@pytest.mark.parametrize("n, ratio", [(1, 0.5), (2, 0.5), (7, 0.5), (33, 0.25), (64, 0.1), (101, 0.6), (150, 0.05)])
def test_matches_loop_reference(window, n, ratio):
    """Same groups as a slow per-slot implementation of the spec, which checks every merge's window per round."""
    x = _random(n, 1, n, 6)
    method = "global" if window is None else "ltbm"
    kwargs = {} if window is None else {"window": window}
    out = merge_tokens(x, method=method, keep_ratio=ratio, **kwargs)
    groups, _ = reference_bipartite(x[0], output_length(n, keep_ratio=ratio), window)
    assert torch.equal(out.assignment[0], groups_to_assignment(groups, n))


def test_reference_rounds_respect_window_and_halve():
    groups, rounds = reference_bipartite(_random(0, 1, 100, 4)[0], 10, 3)
    assert [len(r) for r in rounds] == [50, 25, 12, 3]
    assert len(groups) == 10


@given(
    n=st.integers(1, 300),
    ratio=st.floats(0.01, 1.0),
    window=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_single_round_merges_stay_within_window(n, ratio, window, seed):
    """With keep >= 0.5 there is one round: every input token ends within `window` slots of its group's B token."""
    ratio = max(ratio, 0.5)
    x = _random(seed, 1, n, 4)
    out = merge_tokens(x, keep_ratio=ratio, window=window)
    a = out.assignment[0]
    for j in range(int(out.lengths[0])):
        members = (a == j).nonzero().flatten()
        anchor = members[members % 2 == 1] if len(members) > 1 else members
        assert len(anchor) == 1  # a merged group holds exactly one B token
        assert int((members - anchor).abs().max()) <= window


@given(
    b=st.integers(1, 3),
    n=st.integers(1, 400),
    ratio=st.floats(0.01, 1.0),
    window=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_small_windows_merge_contiguous_runs(b, n, ratio, window, seed):
    out = merge_tokens(_random(seed, b, n, 3), keep_ratio=ratio, window=window)
    assert bool((out.assignment.diff(dim=1) >= 0).all())  # monotone assignment = every group is a contiguous run


def test_window_two_equals_window_one_and_four_equals_three():
    x = _random(1, 2, 500, 8)
    for even, odd in ((2, 1), (4, 3), (16, 15)):
        a = merge_tokens(x, keep_ratio=0.2, window=even)
        b = merge_tokens(x, keep_ratio=0.2, window=odd)
        assert torch.equal(a.assignment, b.assignment)


@given(
    b=st.integers(1, 3),
    n=st.integers(1, 300),
    extra=st.integers(0, 50),
    ratio=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
)
def test_window_covering_sequence_equals_global_bitwise(b, n, extra, ratio, seed, dtype):
    x = _random(seed, b, n, 5).to(dtype)
    lengths = torch.randint(1, n + 1, (b,), generator=torch.Generator().manual_seed(seed))
    local = merge_tokens(x, lengths, method="ltbm", keep_ratio=ratio, window=max(1, n - 1) + extra)
    glob = merge_tokens(x, lengths, method="global", keep_ratio=ratio)
    for field in ("tokens", "lengths", "sizes", "assignment"):
        assert torch.equal(getattr(local, field), getattr(glob, field)), field


def test_local_and_global_differ_on_long_sequences():
    x = _random(3, 1, 750, 16)
    local = merge_tokens(x, keep_ratio=0.25, window=1)
    glob = merge_tokens(x, method="global", keep_ratio=0.25)
    assert not torch.equal(local.assignment, glob.assignment)


def test_merges_most_similar_neighbours_first():
    # Tokens 2 and 3 are identical, everything else orthogonal: the one merge joins them.
    x = torch.eye(6).unsqueeze(0)
    x[0, 2] = x[0, 3]
    out = merge_tokens(x, num_tokens=5, window=1)
    assert out.assignment.tolist() == [[0, 1, 2, 2, 3, 4]]
    assert out.sizes.tolist() == [[1, 1, 2, 1, 1]]


def test_keys_drive_the_matching_not_the_tokens():
    x = torch.randn(1, 6, 4)
    keys = torch.eye(6).unsqueeze(0)
    keys[0, 4] = keys[0, 5]
    out = merge_tokens(x, keys=keys, num_tokens=5, window=1)
    assert out.assignment.tolist() == [[0, 1, 2, 3, 4, 4]]
    torch.testing.assert_close(out.tokens[0, 4], x[0, 4:].mean(0))


def test_default_window():
    x = _random(5, 1, 300, 8)
    assert torch.equal(
        merge_tokens(x, keep_ratio=0.2).assignment, merge_tokens(x, keep_ratio=0.2, window=DEFAULT_WINDOW).assignment
    )


def test_band_uses_linear_memory_at_15000_tokens():
    """LTBM at N = 15000, D = 1280 never materialises anything bigger than the input: no N x N (or N/2 x N/2)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestTensor(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel())
            return out

    n, d = 15000, 1280
    x = torch.randn(1, n, d)
    for window in (1, 3, 16):
        with LargestTensor() as mode:
            out = merge_tokens(x, keep_ratio=0.25, window=window)
        assert out.lengths.tolist() == [3750]
        assert mode.largest <= n * d < (n // 2) ** 2
