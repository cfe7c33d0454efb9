"""Norm-preserving merging (`preserve_norm=True`): a merged token keeps the size-weighted mean norm of the original
tokens it stands for, in the direction of their plain average."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hf_ltbm.merging import NORM_CANCEL_THRESHOLD, merge_tokens

from .test_api import AVERAGING, BUILTIN, batches

PRUNING = [m for m in BUILTIN if m not in AVERAGING]


def _norm_tolerance(dtype: torch.dtype) -> float:
    """Relative error of a norm after rounding a float32 vector to `dtype` (each component within half an ulp), with
    float32 arithmetic on top."""
    return 2 * torch.finfo(dtype).eps + 1e-5


@given(data=batches(max_n=600), method=st.sampled_from(sorted(AVERAGING)))
def test_each_merged_token_has_its_members_mean_norm_in_the_direction_of_their_mean(data, method):
    x, lengths, count, _ = data
    x_before = x.clone()
    plain = merge_tokens(x, lengths, method=method, **count)
    out = merge_tokens(x, lengths, method=method, **count, preserve_norm=True)
    assert torch.equal(x, x_before)  # input never mutated
    assert torch.equal(out.assignment, plain.assignment) and torch.equal(out.sizes, plain.sizes)
    assert torch.equal(out.lengths, plain.lengths) and out.tokens.dtype == x.dtype
    tol = _norm_tolerance(x.dtype)
    for row in range(x.shape[0]):
        m, a = int(out.lengths[row]), out.assignment[row]
        assert bool((out.tokens[row, m:] == 0).all())  # padding stays zero
        for slot in range(m):
            members = x[row][a == slot].float()
            mean = members.mean(0)
            target = float(torch.linalg.vector_norm(members, dim=-1).mean())
            token = out.tokens[row, slot]
            if len(members) == 1 or float(torch.linalg.vector_norm(mean)) <= NORM_CANCEL_THRESHOLD * target:
                assert torch.equal(token, plain.tokens[row, slot])  # a single token, or members that cancel
                continue
            norm = float(torch.linalg.vector_norm(token.float()))
            assert math.isclose(norm, target, rel_tol=tol, abs_tol=1e-6), (slot, norm, target)
            # the direction is plain averaging's: the token is the mean rescaled
            expected = mean * (target / float(torch.linalg.vector_norm(mean)))
            torch.testing.assert_close(token.float(), expected, rtol=tol, atol=tol * target)


@pytest.mark.parametrize("method", sorted(AVERAGING))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_keep_one_and_single_tokens_are_bitwise_unchanged(method, dtype):
    x = torch.randn(2, 37, 6, generator=torch.Generator().manual_seed(0)).to(dtype)
    out = merge_tokens(x, [37, 20], method=method, keep_ratio=1.0, preserve_norm=True)
    assert torch.equal(out.tokens[0], x[0]) and torch.equal(out.tokens[1, :20], x[1, :20])
    assert bool((out.tokens[1, 20:] == 0).all())


def test_members_that_cancel_keep_the_plain_mean():
    x = torch.tensor([[[1.0, 2.0], [-1.0, -2.0], [3.0, 0.0], [-3.0, 0.0]]])
    out = merge_tokens(x, method="pool", num_tokens=2, preserve_norm=True)
    assert out.sizes.tolist() == [[2, 2]] and torch.equal(out.tokens, torch.zeros(1, 2, 2))


@pytest.mark.parametrize("method", ["ltbm", "global"])
def test_over_two_rounds_the_target_is_the_mean_norm_of_the_original_members(method):
    """4 tokens to 1 takes two rounds (a round merges at most half). Whatever pairs merge first, the token stands for
    all four: its norm is (3 + 3 + 1 + 1) / 4 = 2, the mean over the originals. (Averaging the norms of the first
    round's tokens instead would give 1.56 if (3,0) met (0,3), 1.79 for the other pairings.)"""
    x = torch.tensor([[[3.0, 0.0], [0.0, 3.0], [1.0, 0.0], [1.0, 0.0]]])
    options = {"window": 4} if method == "ltbm" else {}
    out = merge_tokens(x, method=method, num_tokens=1, preserve_norm=True, **options)
    assert out.sizes.tolist() == [[4]] and out.assignment.tolist() == [[0, 0, 0, 0]]
    mean = torch.tensor([1.25, 0.75])  # the plain average of the four
    expected = mean * (2.0 / math.sqrt(1.25**2 + 0.75**2))
    torch.testing.assert_close(out.tokens[0, 0], expected)
    assert math.isclose(float(out.tokens[0, 0].norm()), 2.0, rel_tol=1e-6)


@pytest.mark.parametrize("method", sorted(AVERAGING))
def test_gradients_flow_and_nan_padding_stays_out(method):
    x = torch.randn(2, 50, 8, generator=torch.Generator().manual_seed(3))
    x[1, 30:] = float("nan")
    x.requires_grad_(True)
    out = merge_tokens(x, [50, 30], method=method, keep_ratio=0.3, preserve_norm=True)
    (out.tokens * torch.randn(out.tokens.shape, generator=torch.Generator().manual_seed(4))).sum().backward()
    assert not bool(out.tokens.isnan().any()) and not bool(x.grad.isnan().any())
    assert bool((x.grad[0].abs().sum(-1) > 0).all()) and bool((x.grad[1, :30].abs().sum(-1) > 0).all())
    assert bool((x.grad[1, 30:] == 0).all())
    clean = merge_tokens(torch.nan_to_num(x.detach()), [50, 30], method=method, keep_ratio=0.3, preserve_norm=True)
    assert torch.equal(clean.tokens, out.tokens.detach())


@pytest.mark.parametrize("method", PRUNING)
def test_a_pruning_method_refuses_it_by_name(method):
    with pytest.raises(ValueError, match=rf"`preserve_norm=True` rescales averaged tokens; method '{method}' selects"):
        merge_tokens(torch.randn(1, 10, 4), method=method, keep_ratio=0.5, preserve_norm=True)


def test_it_must_be_a_bool():
    with pytest.raises(TypeError, match=r"`preserve_norm` must be True or False, got 1"):
        merge_tokens(torch.randn(1, 10, 4), keep_ratio=0.5, preserve_norm=1)
