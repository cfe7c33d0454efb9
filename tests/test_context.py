import pytest
from transformers import Qwen2AudioForConditionalGeneration

import hf_ltbm
from hf_ltbm import AudioTokenMergeConfig, audio_token_merge
from hf_ltbm.tiny import build_tiny_model


def test_switches_model_and_merging_processor_and_restores_them():
    model, processor = build_tiny_model(audio_token_merge="ltbm")
    before_model, before_proc = model.config.audio_token_merge, dict(processor.audio_token_merge)
    with audio_token_merge(model, {"method": "pool", "keep_ratio": 0.25}, processor) as active:
        assert active == AudioTokenMergeConfig(method="pool", keep_ratio=0.25)
        assert model.audio_token_merge == active and model.model.audio_token_merge == active
        assert processor.merge_config == active
    assert model.config.audio_token_merge == before_model
    assert processor.audio_token_merge == before_proc


def test_none_turns_merging_off_inside_the_block():
    model, processor = build_tiny_model(audio_token_merge="ltbm")
    with audio_token_merge(model, None, processor):
        assert model.audio_token_merge is None and processor.merge_config is None
    assert model.audio_token_merge.method == "ltbm"


def test_restored_when_the_block_raises():
    model, processor = build_tiny_model(audio_token_merge=None)
    with pytest.raises(RuntimeError, match="boom"):
        with audio_token_merge(model, "global", processor):
            raise RuntimeError("boom")
    assert model.audio_token_merge is None and processor.audio_token_merge is None


def test_bad_setting_changes_nothing():
    model, processor = build_tiny_model(audio_token_merge="ltbm")
    snapshot = (dict(model.config.audio_token_merge), dict(processor.audio_token_merge))
    with pytest.raises(ValueError, match="`keep_ratio` must be in \\(0, 1\\]"):
        with audio_token_merge(model, {"method": "pool", "keep_ratio": 2.0}, processor):
            pass
    assert (model.config.audio_token_merge, processor.audio_token_merge) == snapshot


def test_a_stock_processor_is_left_alone_and_upstream_models_are_refused():
    from hf_ltbm.tiny import build_tiny_model as build

    model, processor = build()
    stock = object()
    with audio_token_merge(model, "pool", stock):
        assert model.audio_token_merge.method == "pool"
    upstream = Qwen2AudioForConditionalGeneration(model.config)
    with pytest.raises(TypeError, match="Qwen2AudioForConditionalGeneration has no merge setting"):
        with audio_token_merge(upstream, "ltbm"):
            pass
    assert hf_ltbm.audio_token_merge is audio_token_merge
