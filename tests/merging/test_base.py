import math
import subprocess
import sys
import textwrap

import pytest
import torch

from hf_ltbm.merging import (
    TokenReducer,
    available_methods,
    get_method_class,
    merge_tokens,
    output_length,
    register_method,
)
from hf_ltbm.merging.base import _REGISTRY, pool_by_assignment
from hf_ltbm.merging.registry import BUILTIN_METHODS


class TestOutputLength:
    @pytest.mark.parametrize(
        "n, ratio, expected",
        [(750, 0.1, 75), (750, 0.25, 188), (750, 0.5, 375), (750, 1.0, 750), (1, 0.01, 1), (3, 0.34, 2), (10, 0.3, 3)],
    )
    def test_keep_ratio_is_exact_on_the_decimal_value(self, n, ratio, expected):
        assert output_length(n, keep_ratio=ratio) == expected

    def test_matches_ceil_formula(self):
        for n in range(1, 400):
            for ratio in (0.05, 0.1, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.75, 0.9, 0.99, 1.0):
                exact = math.ceil(round(ratio * n, 9))
                assert output_length(n, keep_ratio=ratio) == max(1, exact)

    def test_num_tokens_is_a_budget(self):
        assert output_length(750, num_tokens=100) == 100
        assert output_length(50, num_tokens=100) == 50

    @pytest.mark.parametrize("ratio", [0, 0.0, -0.5, 1.01, 2, float("nan"), float("inf")])
    def test_rejects_keep_ratio_outside_unit_interval(self, ratio):
        with pytest.raises(ValueError, match=r"keep_ratio.*\(0, 1\]"):
            output_length(10, keep_ratio=ratio)

    @pytest.mark.parametrize("ratio", ["0.5", True, None.__class__])
    def test_rejects_non_numeric_keep_ratio(self, ratio):
        with pytest.raises(TypeError, match="keep_ratio"):
            output_length(10, keep_ratio=ratio)

    def test_requires_exactly_one_count_setting(self):
        with pytest.raises(ValueError, match="exactly one"):
            output_length(10)
        with pytest.raises(ValueError, match="exactly one"):
            output_length(10, keep_ratio=0.5, num_tokens=3)

    @pytest.mark.parametrize("bad", [0, -1])
    def test_rejects_bad_num_tokens_and_n(self, bad):
        with pytest.raises(ValueError, match="num_tokens"):
            output_length(10, num_tokens=bad)
        with pytest.raises(ValueError, match="`n`"):
            output_length(bad, keep_ratio=0.5)
        with pytest.raises(TypeError, match="num_tokens"):
            output_length(10, num_tokens=2.0)


class TestPoolByAssignment:
    def test_means_and_sizes(self):
        x = torch.arange(12, dtype=torch.float32).view(1, 6, 2)
        tokens, sizes = pool_by_assignment(x, torch.tensor([[0, 0, 1, -1, 2, 2]]), 3)
        assert sizes.tolist() == [[2, 1, 2]]
        torch.testing.assert_close(tokens, torch.tensor([[[1.0, 2.0], [4.0, 5.0], [9.0, 10.0]]]))

    def test_left_out_nan_never_reaches_output(self):
        x = torch.ones(1, 3, 2)
        x[0, 1] = float("nan")
        tokens, _ = pool_by_assignment(x, torch.tensor([[0, -1, 0]]), 1)
        assert torch.equal(tokens, torch.ones(1, 1, 2))


class TestRegistry:
    def test_builtin_methods_are_registered(self):
        assert available_methods()[:7] == [
            "ltbm",
            "global",
            "pool",
            "prune_norm",
            "prune_attention",
            "segment_topk",
            "random",
        ]

    def test_unknown_method_lists_known_ones(self):
        with pytest.raises(ValueError, match=r"Unknown `method` 'tome'.*'ltbm'.*'global'"):
            get_method_class("tome")

    def test_user_method_is_usable_by_name(self):
        try:

            @register_method("keep_first")
            class KeepFirst(TokenReducer):
                averages = False

                def assign(self, x, lengths, num_out, **_):
                    pos = torch.arange(x.shape[1])[None]
                    return torch.where(pos < num_out[:, None], pos, -1)

            out = merge_tokens(torch.randn(1, 8, 2), method="keep_first", num_tokens=3)
            assert out.assignment.tolist() == [[0, 1, 2, -1, -1, -1, -1, -1]]
            assert "keep_first" in available_methods()
            with pytest.raises(ValueError, match="already registered"):
                register_method("keep_first")(type("Other", (KeepFirst,), {}))
        finally:
            _REGISTRY.pop("keep_first", None)

    def test_only_token_reducers_can_be_registered(self):
        with pytest.raises(TypeError, match="TokenReducer"):
            register_method("bad")(object)

    def test_the_builtin_table_names_each_class_under_its_own_name(self):
        assert available_methods()[: len(BUILTIN_METHODS)] == list(BUILTIN_METHODS)
        for name, target in BUILTIN_METHODS.items():
            cls = get_method_class(name)
            assert cls.name == name and _REGISTRY[name] is cls
            assert target == f".{cls.__module__.rpartition('.')[2]}:{cls.__qualname__}"
        import hf_ltbm.merging as merging

        exported = {getattr(merging, n) for n in merging.__all__} - {TokenReducer}
        reducers = {c for c in exported if isinstance(c, type) and issubclass(c, TokenReducer)}
        assert reducers == {get_method_class(name) for name in BUILTIN_METHODS}  # every built-in class is in the table

    def test_overwrite_replaces_a_builtin(self):
        original = get_method_class("pool")
        try:
            replacement = register_method("pool", overwrite=True)(type("MyPool", (original,), {}))
            assert get_method_class("pool") is replacement
            assert available_methods()[: len(BUILTIN_METHODS)] == list(BUILTIN_METHODS)  # same place in the order
        finally:
            _REGISTRY["pool"] = original
            original.name = "pool"

    def test_names_need_no_torch_and_a_replaced_builtin_stays_replaced_once_its_module_runs(self):
        code = """
            import sys
            from hf_ltbm.merging import DEFAULT_WINDOW, available_methods, get_method_class
            assert available_methods()[:2] == ["ltbm", "global"] and DEFAULT_WINDOW == 3
            assert "torch" not in sys.modules
            from hf_ltbm.merging import TokenReducer, register_method
            mine = register_method("ltbm", overwrite=True)(type("Mine", (TokenReducer,), {"assign": None}))
            import hf_ltbm.merging.bipartite  # the built-in's module runs after the user's replacement
            assert get_method_class("ltbm") is mine, get_method_class("ltbm")
            assert hf_ltbm.merging.bipartite.LocalTemporalBipartiteMerge.name == "ltbm"
            assert get_method_class("global").name == "global"
            """
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
