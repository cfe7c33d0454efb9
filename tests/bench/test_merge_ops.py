import pytest
import torch

import hf_ltbm
from hf_ltbm.bench.merge_ops import dense_tome_merge, run_merge_ops, scaling_exponents


@pytest.mark.parametrize("window", [None, 1, 3, 8])
def test_dense_reference_computes_what_the_banded_implementation_computes(window):
    x = torch.randn(3, 97, 16, generator=torch.Generator().manual_seed(window or 0))
    tokens, sizes = dense_tome_merge(x, 25, window)
    method = {"method": "global"} if window is None else {"method": "ltbm", "window": window}
    ours = hf_ltbm.merge_tokens(x, num_tokens=25, **method)
    torch.testing.assert_close(ours.tokens, tokens, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours.sizes.float(), sizes[..., 0])


def test_rows_and_skipped_references():
    rows = run_merge_ops(sizes=(40, 80), batches=(1, 2), dim=8, windows=(1,), repeats=1, reference_max_elements=900)
    names = {r["method"] for r in rows}
    assert {"ltbm w=1", "global", "pool", "dense ToMe w=1", "dense ToMe global"} <= names
    # 2 * 40^2/4 = 800 <= 900 < 80^2/4 = 1600: the dense reference only runs at N=40
    assert {(r["batch"], r["N"]) for r in rows if r["method"] == "dense ToMe global"} == {(1, 40), (2, 40)}
    for r in rows:
        assert r["time_ms"] > 0 and r["peak_mb"] >= 0
        assert r["time_ms_per_clip"] == pytest.approx(r["time_ms"] / r["batch"])


def test_scaling_exponent_is_the_log_log_slope():
    rows = [{"method": "m", "batch": 1, "N": n, "time_ms": 3.0 * n**2} for n in (10, 100, 1000)]
    rows += [{"method": "lin", "batch": 1, "N": n, "time_ms": 0.5 * n} for n in (10, 100)]
    slopes = scaling_exponents(rows)
    assert slopes[("m", 1)] == pytest.approx(2.0) and slopes[("lin", 1)] == pytest.approx(1.0)


def test_norm_preserving_variants_are_timed_beside_plain_averaging():
    from hf_ltbm.bench.merge_ops import preserve_norm_overhead
    from hf_ltbm.bench.report import merge_ops_markdown

    rows = run_merge_ops(sizes=(40,), batches=(1,), dim=8, windows=(1,), repeats=1, reference_max_elements=0)
    overhead = preserve_norm_overhead(rows)
    assert {r["method"] for r in overhead} == {"ltbm w=1", "global", "pool"}  # the averaging methods only
    for r in overhead:
        assert r["norm_ratio"] == pytest.approx(r["norm_time_ms"] / r["time_ms"]) and r["N"] == 40
    assert "time with / without `preserve_norm`" in merge_ops_markdown(rows)
