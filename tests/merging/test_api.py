"""Properties every method must satisfy, on any input, and the validation of `merge_tokens`."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hf_ltbm.merging import available_methods, get_method_class, merge_tokens, output_length

BUILTIN = ["ltbm", "global", "pool", "prune_norm", "prune_attention", "segment_topk", "random"]
AVERAGING = {"ltbm", "global", "pool"}


def _inputs(method, x, seed):
    g = torch.Generator().manual_seed(seed)
    kwargs = {}
    if get_method_class(method)().requires_scores:
        kwargs["scores"] = torch.rand(x.shape[:2], generator=g)
    if method == "random":
        kwargs["generator"] = g
    return kwargs


@st.composite
def batches(draw, max_n=2000):
    b = draw(st.integers(1, 3))
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, 8))
    lengths = draw(st.lists(st.integers(1, n), min_size=b, max_size=b))
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    seed = draw(st.integers(0, 2**20))
    kind = draw(st.sampled_from(["randn", "constant", "zeros", "few_values"]))
    g = torch.Generator().manual_seed(seed)
    if kind == "randn":
        x = torch.randn(b, n, d, generator=g)
    elif kind == "constant":
        x = torch.full((b, n, d), 0.7)
    elif kind == "zeros":
        x = torch.zeros(b, n, d)
    else:  # many exact ties
        x = torch.randint(0, 3, (b, n, d), generator=g).float()
    if draw(st.booleans()):
        count = {"keep_ratio": draw(st.floats(0.001, 1.0))}
    else:
        count = {"num_tokens": draw(st.integers(1, max_n))}
    return x.to(dtype), torch.tensor(lengths), count, seed


@given(data=batches(), method=st.sampled_from(BUILTIN))
def test_contract_holds_for_every_method(data, method):
    x, lengths, count, seed = data
    x_before = x.clone()
    out = merge_tokens(x, lengths, method=method, **count, **_inputs(method, x, seed))
    b, n, d = x.shape
    expected = [output_length(int(length), **count) for length in lengths]

    # exact counts, shapes, dtype
    assert out.lengths.tolist() == expected
    assert out.tokens.shape == (b, max(expected), d) and out.tokens.dtype == x.dtype
    assert out.sizes.shape == (b, max(expected)) and out.assignment.shape == (b, n)
    assert torch.equal(x, x_before)  # input never mutated

    for row in range(b):
        length, m = int(lengths[row]), expected[row]
        a, sizes, tokens = out.assignment[row], out.sizes[row], out.tokens[row]
        # padding: assignment -1, padded outputs zero
        assert bool((a[length:] == -1).all())
        assert bool((sizes[m:] == 0).all()) and bool((tokens[m:] == 0).all())
        # assignment and sizes agree, every output token is used
        assert torch.equal(torch.bincount(a[a >= 0], minlength=m)[:m], sizes[:m])
        assert bool((sizes[:m] >= 1).all())
        # sizes sum to the valid length for averaging methods, to M for pruning (sizes all 1)
        if method in AVERAGING:
            assert int(sizes.sum()) == length and bool((a[:length] >= 0).all())
        else:
            assert bool((sizes[:m] == 1).all())
            kept = a[:length] >= 0
            assert torch.equal(a[:length][kept], torch.arange(m))  # temporal order of kept tokens
            assert torch.equal(tokens[:m], x[row, :length][kept])  # pruning returns the tokens themselves
        # tokens are the means of their groups (computed in float32, returned in the input dtype)
        valid = a >= 0
        sums = torch.zeros(m, d).index_add_(0, a[valid], x[row][valid].float())
        means = (sums / sizes[:m, None].float()).to(x.dtype)
        torch.testing.assert_close(tokens[:m], means, atol=0, rtol=0)
        # mass conservation for the averaging methods
        if method in AVERAGING:
            mass = (sizes[:m, None].float() * tokens[:m].float()).sum(0)
            eps = torch.finfo(x.dtype).eps
            tol = 2 * eps * (sizes[:m, None].float() * tokens[:m].float().abs()).sum(0) + 1e-5 * length
            assert bool(((mass - x[row, :length].float().sum(0)).abs() <= tol).all())
        assert not bool(tokens.isnan().any())


@given(data=batches(max_n=300), method=st.sampled_from(BUILTIN))
def test_padding_never_enters_a_valid_token(data, method):
    x, lengths, count, seed = data
    if int(lengths.min()) == x.shape[1]:
        lengths = lengths.clone()
        lengths[0] = max(1, x.shape[1] - 1)
    pad = torch.arange(x.shape[1])[None] >= lengths[:, None]
    kwargs = _inputs(method, x, seed)
    garbage = x.masked_fill(pad[..., None], float("nan"))
    if "scores" in kwargs:
        noisy = kwargs["scores"].masked_fill(pad, 1e9)
    clean = merge_tokens(x.masked_fill(pad[..., None], 0.0), lengths, method=method, **count, **kwargs)
    if "scores" in kwargs:
        kwargs["scores"] = noisy
    if method == "random":
        kwargs["generator"] = torch.Generator().manual_seed(seed)
        clean = merge_tokens(x.masked_fill(pad[..., None], 0.0), lengths, method=method, **count, **kwargs)
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    dirty = merge_tokens(garbage, lengths, method=method, **count, **kwargs)
    assert torch.equal(clean.assignment, dirty.assignment)
    assert torch.equal(clean.tokens, dirty.tokens)


@pytest.mark.parametrize("method", BUILTIN)
def test_bitwise_deterministic_on_cpu(method):
    x = torch.randn(3, 900, 32, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([900, 751, 20])
    runs = []
    for _ in range(2):
        kwargs = _inputs(method, x, 7)
        runs.append(merge_tokens(x, lengths, method=method, keep_ratio=0.3, **kwargs))
    for field in ("tokens", "sizes", "assignment", "lengths"):
        assert torch.equal(getattr(runs[0], field), getattr(runs[1], field))


@pytest.mark.parametrize("method", [m for m in BUILTIN if m != "random"])  # random draws depend on the batch shape
def test_batched_equals_row_by_row(method):
    x = torch.randn(3, 400, 16, generator=torch.Generator().manual_seed(1))
    lengths = [400, 123, 7]
    kwargs = _inputs(method, x, 3)
    batched = merge_tokens(x, lengths, method=method, keep_ratio=0.2, **kwargs)
    for row, length in enumerate(lengths):
        row_kwargs = {k: v[row : row + 1, :length] for k, v in kwargs.items()}
        single = merge_tokens(x[row : row + 1, :length], method=method, keep_ratio=0.2, **row_kwargs)
        m = int(single.lengths[0])
        assert torch.equal(batched.assignment[row, :length], single.assignment[0])
        torch.testing.assert_close(batched.tokens[row, :m], single.tokens[0])


@pytest.mark.parametrize("method", ["ltbm", "global", "pool"])
def test_gradients_flow_to_every_valid_input(method):
    x = torch.randn(2, 50, 8, requires_grad=True)
    out = merge_tokens(x, [50, 30], method=method, keep_ratio=0.3)
    (out.tokens * torch.randn_like(out.tokens)).sum().backward()
    assert bool((x.grad[0].abs().sum(-1) > 0).all()) and bool((x.grad[1, :30].abs().sum(-1) > 0).all())
    assert bool((x.grad[1, 30:] == 0).all())


@pytest.mark.parametrize("method", ["prune_norm", "prune_attention", "segment_topk", "random"])
def test_gradients_flow_to_kept_inputs_when_pruning(method):
    x = torch.randn(1, 40, 4, requires_grad=True)
    out = merge_tokens(x, method=method, keep_ratio=0.25, **_inputs(method, x.detach(), 0))
    out.tokens.sum().backward()
    assert torch.equal(x.grad.abs().sum(-1)[0] > 0, out.assignment[0] >= 0)


@pytest.mark.parametrize("method", BUILTIN)
@pytest.mark.parametrize("fill", [0.0, 3.0])
def test_no_nan_for_zero_or_constant_inputs(method, fill):
    x = torch.full((2, 101, 8), fill)
    out = merge_tokens(x, [101, 60], method=method, keep_ratio=0.2, **_inputs(method, x, 0))
    assert not bool(out.tokens.isnan().any())
    assert torch.equal(out.tokens[0, :21], torch.full((21, 8), fill))


class TestValidation:
    x = torch.randn(2, 10, 4)

    @pytest.mark.parametrize("ratio", [0, -0.1, 1.5])
    def test_keep_ratio_range(self, ratio):
        with pytest.raises(ValueError, match=rf"`keep_ratio` must be in \(0, 1\].*got {ratio}"):
            merge_tokens(self.x, keep_ratio=ratio)

    def test_both_or_neither_count(self):
        with pytest.raises(ValueError, match="exactly one of `keep_ratio`.*`num_tokens`"):
            merge_tokens(self.x)
        with pytest.raises(ValueError, match="exactly one of `keep_ratio`.*`num_tokens`"):
            merge_tokens(self.x, keep_ratio=0.5, num_tokens=4)

    @pytest.mark.parametrize("window", [0, -3])
    def test_window_at_least_one(self, window):
        with pytest.raises(ValueError, match=rf"`window` must be an int >= 1, got {window}"):
            merge_tokens(self.x, keep_ratio=0.5, window=window)

    def test_window_type(self):
        with pytest.raises(TypeError, match="`window` must be an int"):
            merge_tokens(self.x, keep_ratio=0.5, window=2.5)

    def test_window_rejected_where_meaningless(self):
        with pytest.raises(ValueError, match=r"method='global' does not take `window`.*method='ltbm'"):
            merge_tokens(self.x, method="global", keep_ratio=0.5, window=4)
        with pytest.raises(ValueError, match=r"method='pool' does not take `window`; it takes no options"):
            merge_tokens(self.x, method="pool", keep_ratio=0.5, window=4)

    def test_unknown_method_lists_known(self):
        with pytest.raises(ValueError, match=r"Unknown `method` 'tome'; known methods: 'ltbm', 'global', 'pool'"):
            merge_tokens(self.x, method="tome", keep_ratio=0.5)

    @pytest.mark.parametrize("lengths", [[0, 5], [11, 5], [-1, 3]])
    def test_lengths_out_of_range(self, lengths):
        with pytest.raises(ValueError, match=r"`lengths` must lie in \[1, N\] = \[1, 10\]"):
            merge_tokens(self.x, lengths, keep_ratio=0.5)

    def test_lengths_shape_and_type(self):
        with pytest.raises(ValueError, match=r"`lengths` must have shape \[B\] = \[2\]"):
            merge_tokens(self.x, [5], keep_ratio=0.5)
        with pytest.raises(TypeError, match="`lengths` must be an integer tensor"):
            merge_tokens(self.x, torch.tensor([5.0, 3.0]), keep_ratio=0.5)

    @pytest.mark.parametrize("shape", [(10, 4), (1, 2, 10, 4)])
    def test_wrong_rank(self, shape):
        with pytest.raises(ValueError, match=r"`x` must have shape \[B, N, D\]"):
            merge_tokens(torch.randn(shape), keep_ratio=0.5)

    def test_x_type_and_dtype(self):
        with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
            merge_tokens([[1.0]], keep_ratio=0.5)
        with pytest.raises(TypeError, match="`x` must be a floating-point tensor"):
            merge_tokens(torch.ones(1, 3, 2, dtype=torch.long), keep_ratio=0.5)

    def test_keys_and_scores_shapes(self):
        with pytest.raises(ValueError, match=r"`keys` must have shape \[B, N, Dk\] = \[2, 10, Dk\]"):
            merge_tokens(self.x, keep_ratio=0.5, keys=torch.randn(2, 9, 4))
        with pytest.raises(ValueError, match=r"`scores` must have shape \[B, N\] = \[2, 10\]"):
            merge_tokens(self.x, method="prune_attention", keep_ratio=0.5, scores=torch.randn(2, 9))
        with pytest.raises(ValueError, match=r"`scores` must have shape \[B, N\]"):
            merge_tokens(self.x, method="prune_attention", keep_ratio=0.5, scores=torch.randn(2, 10, 1))

    def test_scores_required_for_attention_pruning(self):
        with pytest.raises(ValueError, match="method 'prune_attention' needs `scores` of shape"):
            merge_tokens(self.x, method="prune_attention", keep_ratio=0.5)
        with pytest.raises(ValueError, match="method 'segment_topk' needs `scores`"):
            merge_tokens(self.x, method="segment_topk", keep_ratio=0.5)

    def test_inputs_a_method_ignores_are_errors(self):
        with pytest.raises(ValueError, match="`scores` is only used by score-based pruning; method 'ltbm'"):
            merge_tokens(self.x, keep_ratio=0.5, scores=torch.rand(2, 10))
        with pytest.raises(ValueError, match="`keys` is only used by the merging methods; method 'pool'"):
            merge_tokens(self.x, method="pool", keep_ratio=0.5, keys=self.x)
        with pytest.raises(ValueError, match="`generator` is only used by random methods; method 'ltbm'"):
            merge_tokens(self.x, keep_ratio=0.5, generator=torch.Generator())

    def test_unknown_option(self):
        with pytest.raises(
            ValueError, match=r"method='segment_topk' does not take `segments`; it takes `num_segments`"
        ):
            merge_tokens(self.x, method="segment_topk", keep_ratio=0.5, segments=3, scores=torch.rand(2, 10))

    def test_lengths_not_mutated(self):
        lengths = torch.tensor([10, 4])
        merge_tokens(self.x, lengths, keep_ratio=0.5)
        assert lengths.tolist() == [10, 4]


def test_all_builtin_methods_listed():
    assert set(BUILTIN) <= set(available_methods())
