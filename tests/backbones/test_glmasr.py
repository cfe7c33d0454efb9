"""GLM-ASR: 30 s windows of 375 tokens (4 encoder frames concatenated per token, 12.5 per second), merged before the
projector; clips up to `max_audio_len`; settings that read the encoder's attention scores refused (rotary encoder)."""

import pytest
import torch
from transformers import GlmAsrProcessor

import hf_ltbm
from hf_ltbm.backbones import get_backbone
from hf_ltbm.models.units import capture_merge_inputs
from hf_ltbm.tiny import build_tiny_model, build_tiny_processor

from ..models.tiny import tokens_for_frames
from .common import clips, prompt_inputs, tiny_with_upstream

NAME = "tiny-random-glmasr"
HALF = {"method": "ltbm", "keep_ratio": 0.5}


@pytest.fixture(scope="module")
def tiny():
    return tiny_with_upstream(NAME)


def _inputs(processor, audio):
    return prompt_inputs(processor, audio, "transcribe the speech")


def test_a_30_s_window_is_375_tokens_and_188_at_keep_one_half():
    """The stock processor writes 375 placeholders per full window and `((f - 1) // 2 + 1) // 4` for a window of `f`
    valid mel frames (upstream's count); the merging processor `output_length` of each window."""
    stock = build_tiny_processor(NAME, upstream=True)
    merging = build_tiny_processor(NAME, audio_token_merge=HALF)
    assert type(stock) is GlmAsrProcessor
    (clip,) = clips(45.0)  # a full window and 15 s (1500 mel frames)
    token = stock.audio_token_id
    assert int((_inputs(stock, [clip])["input_ids"] == token).sum()) == 375 + tokens_for_frames(1500, 8) == 375 + 187
    merged = _inputs(merging, [clip])
    assert int((merged["input_ids"] == token).sum()) == 188 + 94
    assert merged["input_features"].shape[0] == 2  # one row per window, as upstream


def test_keep_one_and_no_setting_reproduce_upstream_on_both_prompt_paths(tiny):
    model, processor, upstream = tiny
    batch = _inputs(processor, clips(40.0, 7.0))
    with torch.no_grad():
        expected = upstream(**batch).logits
        assert torch.equal(model(**batch).logits, expected)
        for method in ("ltbm", "global", "pool"):
            with hf_ltbm.audio_token_merge(model, {"method": method, "keep_ratio": 1.0}):
                assert torch.equal(model(**batch).logits, expected), method


def test_the_merge_runs_on_the_projectors_4_frame_tokens(tiny):
    """Merging off, `get_audio_features` is upstream's; with a setting the tokens merged are the encoder's frames
    concatenated 4 at a time (what the projector reads), so projecting them unmerged gives upstream's embeddings."""
    model, processor, upstream = tiny
    batch = _inputs(processor, clips(12.0))
    features, mask = batch["input_features"], batch["input_features_mask"]
    with torch.no_grad():
        stock = upstream.model.get_audio_features(features, mask).pooler_output
        assert torch.equal(model.model.get_audio_features(features, mask).pooler_output, stock)
        with hf_ltbm.audio_token_merge(model, {"method": "pool", "keep_ratio": 1.0}):
            kept = model.model.get_audio_features(features, mask)
        with hf_ltbm.audio_token_merge(model, HALF):
            merged = model.model.get_audio_features(features, mask)
    assert torch.equal(kept.pooler_output, stock)
    assert kept.num_input_tokens.tolist() == [tokens_for_frames(1200, 8)] == [150]
    assert merged.audio_token_counts.tolist() == [75]
    assert merged.merge_result.sizes.sum(1).tolist() == [150]
    width = model.config.audio_config.intermediate_size  # 4 encoder frames of `hidden_size`
    assert merged.merge_result.tokens.shape[-1] == width == 4 * model.config.audio_config.hidden_size


def test_encoder_keys_are_the_last_layers_keys_before_rotation_pooled_to_tokens(tiny):
    model, processor, _ = tiny
    batch = _inputs(processor, clips(4.0))
    tower = model.model.audio_tower
    captured = []
    hook = tower.layers[-1].self_attn.k_proj.register_forward_hook(lambda m, i, out: captured.append(out))
    setting = hf_ltbm.AudioTokenMergeConfig(method="ltbm", key_source="encoder_keys")
    try:
        with torch.no_grad(), capture_merge_inputs(tower, setting, batch["input_features_mask"].sum(-1)) as inputs:
            tower(batch["input_features"])
    finally:
        hook.remove()
    keys = captured[0]  # [1, 1500, heads * head_dim], before the rotary positions are applied
    heads = model.config.audio_config.num_key_value_heads
    per_frame = keys.view(1, keys.shape[1], heads, -1).mean(2)
    expected = per_frame.unflatten(1, (-1, 2)).mean(2)  # pooled pairs, as for every encoder
    torch.testing.assert_close(inputs.encoder_keys, expected)
    tokens = model.model._merge_inputs_at_token_rate(inputs).encoder_keys
    torch.testing.assert_close(tokens, per_frame.unflatten(1, (-1, 4)).mean(2))  # one key per 4-frame token


@pytest.mark.parametrize("method", ["prune_attention", "segment_topk"])
def test_settings_that_read_the_encoders_attention_scores_are_refused_by_name(tiny, method):
    model, processor, _ = tiny
    with pytest.raises(ValueError, match=r"rotates its queries and keys by position.*use a method that needs no"):
        model.set_audio_token_merge({"method": method})
    assert model.audio_token_merge is None
    with pytest.raises(ValueError, match=r"rotates its queries and keys"):
        build_tiny_model(NAME, audio_token_merge={"method": method})
    model.set_audio_token_merge({"method": "segment_topk", "options": {"score": "norm"}})  # scores from the norms
    model.set_audio_token_merge(None)


def test_audio_longer_than_max_audio_len_is_refused_not_truncated():
    processor = build_tiny_processor(NAME, audio_token_merge=HALF, max_audio_len=60)
    (clip,) = clips(61.0)
    with pytest.raises(ValueError, match=r"Audio 0 is 61\.0 s long, but GLM-ASR \(max_audio_len=60: 2 whole 30 s"):
        _inputs(processor, [clip])
    assert get_backbone("glmasr").max_audio_seconds(processor) == 60
    assert get_backbone("glmasr").max_audio_seconds(build_tiny_processor(NAME)) == 630  # 655 s: 21 whole windows


def test_batch_equals_one_at_a_time_with_mixed_lengths(tiny):
    model, processor, _ = tiny
    model.set_audio_token_merge(HALF)
    try:
        audio = clips(40.0, 3.0)
        together = _inputs(processor, audio)
        out = model.generate(**together, max_new_tokens=3, do_sample=False)[:, together["input_ids"].shape[1] :]
        for row, clip in enumerate(audio):
            alone = _inputs(processor, [clip])
            expected = model.generate(**alone, max_new_tokens=3, do_sample=False)[:, alone["input_ids"].shape[1] :]
            assert torch.equal(out[row : row + 1], expected)
    finally:
        model.set_audio_token_merge(None)
