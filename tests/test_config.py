import dataclasses
import json

import pytest
import torch

from hf_ltbm import DEFAULT_WINDOW, AudioTokenMergeConfig, merge_tokens
from hf_ltbm.config import DEFAULT_KEEP_RATIO


def test_defaults_resolve_and_are_recorded():
    cfg = AudioTokenMergeConfig()
    assert (cfg.method, cfg.keep_ratio, cfg.num_tokens, cfg.window) == (
        "ltbm",
        DEFAULT_KEEP_RATIO,
        None,
        DEFAULT_WINDOW,
    )
    assert cfg.to_dict()["window"] == DEFAULT_WINDOW
    assert AudioTokenMergeConfig(method="global").window is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"method": "global", "keep_ratio": 0.25},
        {"method": "pool", "num_tokens": 64},
        {"method": "segment_topk", "options": {"num_segments": 5, "score": "norm"}},
        {"method": "random", "seed": 3, "keep_ratio": 0.1},
        {"method": "ltbm", "window": 16, "space": "projector", "key_source": "encoder_keys"},
    ],
)
def test_round_trips_through_json(kwargs):
    cfg = AudioTokenMergeConfig(**kwargs)
    payload = json.loads(json.dumps(cfg.to_dict()))
    assert AudioTokenMergeConfig.from_dict(payload) == cfg
    assert hash(AudioTokenMergeConfig.from_dict(payload)) == hash(cfg)


def test_from_value_accepts_every_form():
    assert AudioTokenMergeConfig.from_value(None) is None
    assert AudioTokenMergeConfig.from_value("global") == AudioTokenMergeConfig(method="global")
    assert AudioTokenMergeConfig.from_value({"keep_ratio": 0.25}) == AudioTokenMergeConfig(keep_ratio=0.25)
    cfg = AudioTokenMergeConfig(keep_ratio=0.3)
    assert AudioTokenMergeConfig.from_value(cfg) is cfg
    with pytest.raises(TypeError, match="`audio_token_merge` must be None, a method name"):
        AudioTokenMergeConfig.from_value(0.5)


def test_unknown_keys_are_rejected_with_the_known_ones():
    with pytest.raises(
        ValueError, match=r"Unknown audio token merge setting\(s\) \['methd'\]; known settings: \['method'"
    ):
        AudioTokenMergeConfig.from_dict({"methd": "ltbm"})


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": "tome"}, ValueError, "Unknown `method` 'tome'"),
        ({"keep_ratio": 0.0}, ValueError, r"keep_ratio.*\(0, 1\]"),
        ({"keep_ratio": 0.5, "num_tokens": 10}, ValueError, "exactly one"),
        ({"window": 0}, ValueError, "`window` must be an int >= 1, got 0"),
        ({"method": "global", "window": 4}, ValueError, "method='global' does not take `window`"),
        ({"method": "pool", "seed": 1}, ValueError, "`seed` is only used by random methods"),
        ({"method": "random", "seed": -1}, ValueError, "`seed` must be an int >= 0"),
        ({"space": "llm"}, ValueError, r"`space` must be one of \('encoder', 'projector'\), got 'llm'"),
        ({"key_source": "values"}, ValueError, "`key_source` must be one of"),
        ({"method": "pool", "key_source": "encoder_keys"}, ValueError, "only applies to the merging methods"),
        ({"options": {"window": 3}}, ValueError, "Pass `window` as its own field"),
        ({"method": "pool", "options": {"num_segments": 3}}, ValueError, "does not take `num_segments`"),
        ({"options": [1]}, TypeError, "`options` must be a dict"),
        ({"method": 3}, TypeError, "`method` must be a method name"),
    ],
)
def test_validation_on_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        AudioTokenMergeConfig(**kwargs)


def test_immutable_and_does_not_share_the_callers_dict():
    options = {"num_segments": 4}
    cfg = AudioTokenMergeConfig(method="segment_topk", options=options)
    options["num_segments"] = 99
    assert cfg.options == {"num_segments": 4}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.keep_ratio = 0.1
    assert dataclasses.replace(cfg, keep_ratio=0.25).keep_ratio == 0.25


def test_merge_and_output_length_agree_with_the_functional_api():
    x = torch.randn(2, 100, 8)
    cfg = AudioTokenMergeConfig(keep_ratio=0.3, window=5)
    out = cfg.merge(x, torch.tensor([100, 40]))
    assert out.lengths.tolist() == [cfg.output_length(100), cfg.output_length(40)] == [30, 12]
    ref = merge_tokens(x, [100, 40], method="ltbm", keep_ratio=0.3, window=5)
    assert torch.equal(out.tokens, ref.tokens)


def test_seeded_random_is_reproducible():
    cfg = AudioTokenMergeConfig(method="random", seed=11, keep_ratio=0.2)
    x = torch.randn(1, 200, 4)
    assert torch.equal(cfg.merge(x).assignment, cfg.merge(x).assignment)


def test_scores_requirement_is_exposed():
    assert AudioTokenMergeConfig(method="prune_attention").requires_scores
    assert not AudioTokenMergeConfig(method="segment_topk", options={"score": "norm"}).requires_scores
    assert AudioTokenMergeConfig().uses_keys and not AudioTokenMergeConfig(method="pool").uses_keys


def test_str_is_compact():
    assert str(AudioTokenMergeConfig(keep_ratio=0.25)) == "ltbm(keep_ratio=0.25, window=3)"


@pytest.mark.parametrize(
    "method, options", [("segment_topk", {"num_segments": 10}), ("segment_topk", {"score": "attention"})]
)
def test_an_option_at_its_default_is_the_same_setting_as_none(method, options):
    explicit = AudioTokenMergeConfig(method=method, keep_ratio=0.5, options=options)
    assert explicit == AudioTokenMergeConfig(method=method, keep_ratio=0.5) and explicit.options == {}
    other = AudioTokenMergeConfig(method=method, keep_ratio=0.5, options={"num_segments": 4})
    assert other.options == {"num_segments": 4} and other != explicit


def test_preserve_norm_is_stored_only_when_set_and_round_trips():
    plain, default = AudioTokenMergeConfig(), AudioTokenMergeConfig(preserve_norm=False)
    assert plain == default and hash(plain) == hash(default) and "preserve_norm" not in default.to_dict()
    setting = AudioTokenMergeConfig(method="global", keep_ratio=0.25, preserve_norm=True)
    stored = json.loads(json.dumps(setting.to_dict()))
    assert stored["preserve_norm"] is True and AudioTokenMergeConfig.from_dict(stored) == setting
    assert AudioTokenMergeConfig.from_value({"method": "global", "keep_ratio": 0.25, "preserve_norm": True}) == setting
    assert str(setting) == "global(keep_ratio=0.25, preserve_norm=True)"
    x = torch.randn(2, 60, 8, generator=torch.Generator().manual_seed(0))
    direct = merge_tokens(x, [60, 41], method="global", keep_ratio=0.25, preserve_norm=True)
    assert torch.equal(setting.merge(x, torch.tensor([60, 41])).tokens, direct.tokens)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"preserve_norm": "yes"}, TypeError, r"`preserve_norm` must be True or False, got 'yes'"),
        (
            {"method": "prune_norm", "preserve_norm": True},
            ValueError,
            r"`preserve_norm=True` rescales averaged tokens; method 'prune_norm' selects tokens",
        ),
    ],
)
def test_preserve_norm_is_validated_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        AudioTokenMergeConfig(**kwargs)
