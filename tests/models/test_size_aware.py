"""Size-aware attention: the bias identity, bit-identity where sizes are all 1, generation parity on both paths."""

import numpy as np
import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.qwen2.modeling_qwen2 import eager_attention_forward

import hf_ltbm
from hf_ltbm.models.size_aware import size_aware_name, with_size_bias
from hf_ltbm.tiny import TINY_MODELS, build_tiny_model

from ..encoding import encode


class _Module(torch.nn.Module):
    num_key_value_groups = 1
    is_causal = True


@pytest.mark.parametrize("attention", [eager_attention_forward, sdpa_attention_forward])
def test_one_key_of_size_k_attends_like_k_copies(attention):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=g, dtype=torch.float64) for _ in range(3))
    copies = 3  # key 1 duplicated 3 times (same key and value), no bias
    k_dup = torch.cat([k[:, :, :1], k[:, :, 1:2].expand(-1, -1, copies, -1), k[:, :, 2:]], dim=2)
    v_dup = torch.cat([v[:, :, :1], v[:, :, 1:2].expand(-1, -1, copies, -1), v[:, :, 2:]], dim=2)
    full = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    full_dup = torch.ones(1, 1, 5, 5 + copies - 1, dtype=torch.bool)
    if attention is eager_attention_forward:
        full, full_dup = torch.zeros(full.shape, dtype=q.dtype), torch.zeros(full_dup.shape, dtype=q.dtype)
    expected, _ = attention(_Module(), q, k_dup, v_dup, full_dup, scaling=0.3)
    log_sizes = torch.tensor([[0.0, np.log(copies), 0.0, 0.0, 0.0]], dtype=torch.float64)
    got, _ = with_size_bias(attention)(_Module(), q, k, v, full, scaling=0.3, key_log_sizes=log_sizes)
    # float64 throughout; eager's softmax runs in float32, hence its looser (float32) tolerance
    tol = 1e-6 if attention is eager_attention_forward else 1e-12
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("attention", [eager_attention_forward, sdpa_attention_forward])
def test_sizes_all_one_is_plain_attention_bitwise(attention):
    q, k, v = (torch.randn(2, 2, 4, 8) for _ in range(3))
    plain, _ = attention(_Module(), q, k, v, None, scaling=0.5)
    wrapped, _ = with_size_bias(attention)(_Module(), q, k, v, None, scaling=0.5, key_log_sizes=torch.zeros(2, 4))
    assert torch.equal(plain, wrapped)


def test_causal_mask_is_built_when_none_is_given():
    q, k, v = (torch.randn(1, 1, 3, 4) for _ in range(3))
    sizes = torch.tensor([[0.0, 1.0, 0.0]])
    got, _ = with_size_bias(sdpa_attention_forward)(_Module(), q, k, v, None, scaling=1.0, key_log_sizes=sizes)
    causal = torch.ones(3, 3, dtype=torch.bool).tril()[None, None]
    expected, _ = with_size_bias(sdpa_attention_forward)(_Module(), q, k, v, causal, scaling=1.0, key_log_sizes=sizes)
    torch.testing.assert_close(got, expected)
    # Query 0 sees only key 0: the bias on key 1 cannot leak into it.
    torch.testing.assert_close(got[0, 0, 0], v[0, 0, 0])


def clip(seconds, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def inputs(processor, audio, merged=True):
    return encode(processor, "caption", audio)


SIZE_AWARE = {"method": "ltbm", "keep_ratio": 0.25, "size_aware_attention": True}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_generation_paths_agree_and_the_bias_changes_the_output(name):
    model, processor = build_tiny_model(name, audio_token_merge=SIZE_AWARE)
    audio = [clip(3, 1), clip(1.5, 2)]
    merged = inputs(processor, audio)
    stock_processor = build_tiny_model(name)[1]
    stock = inputs(stock_processor, audio)
    kw = dict(max_new_tokens=5, do_sample=False, return_dict_in_generate=True, output_logits=True)
    a, b = model.generate(**merged, **kw), model.generate(**stock, **kw)
    assert torch.equal(a.sequences[:, merged["input_ids"].shape[1] :], b.sequences[:, stock["input_ids"].shape[1] :])
    for la, lb in zip(a.logits, b.logits):
        torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-5)
    with hf_ltbm.audio_token_merge(model, {**SIZE_AWARE, "size_aware_attention": False}, processor):
        plain = model.generate(**merged, **kw)
    assert not torch.allclose(plain.logits[0], a.logits[0])


@pytest.mark.parametrize("name", TINY_MODELS)
def test_the_bias_stays_on_the_cached_keys_while_decoding(name):
    """Every decoding step equals a from-scratch forward over the whole sequence (no cache). The random model may not
    generate the audio placeholder: the forward over the whole sequence would read it as one more audio token."""
    model, processor = build_tiny_model(name, audio_token_merge=SIZE_AWARE)
    batch = inputs(processor, [clip(2.5, 3), clip(1.0, 4)])
    kw = dict(max_new_tokens=4, do_sample=False, suppress_tokens=[model.config.audio_token_id])
    out = model.generate(**batch, **kw, return_dict_in_generate=True, output_logits=True)
    sequences = out.sequences
    mask = torch.cat([batch["attention_mask"], torch.ones(2, 4, dtype=torch.long)], dim=1)
    units = {model._audio_mask_name: batch[model._audio_mask_name]} if model._audio_mask_name else {}
    full = model(
        input_ids=sequences[:, :-1],
        attention_mask=mask[:, :-1],
        input_features=batch["input_features"],
        **units,
        use_cache=False,
    )
    torch.testing.assert_close(full.logits[:, -1], out.logits[-1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_beam_search_and_static_cache(cache_implementation):
    model, processor = build_tiny_model(audio_token_merge=SIZE_AWARE)
    batch = inputs(processor, [clip(2, 5), clip(3, 6)])
    kw = dict(max_new_tokens=4, do_sample=False, cache_implementation=cache_implementation)
    greedy = model.generate(**batch, **kw)
    reference = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert torch.equal(greedy, reference)
    beams = model.generate(**batch, **kw, num_beams=2, num_return_sequences=2)
    assert beams.shape[0] == 4


@pytest.mark.parametrize("method", ["prune_norm", "random", "segment_topk"])
def test_pruning_methods_are_unchanged(method):
    setting = {"method": method, "keep_ratio": 0.3, **({"seed": 0} if method == "random" else {})}
    model, processor = build_tiny_model(audio_token_merge=setting)
    batch = inputs(processor, [clip(2, 7)])
    if method == "segment_topk":
        setting["options"] = {"score": "norm"}
    with hf_ltbm.audio_token_merge(model, setting):
        plain = model(**batch).logits
    with hf_ltbm.audio_token_merge(model, {**setting, "size_aware_attention": True}):
        assert model.model.language_model.config._attn_implementation == "size_aware_sdpa"
        aware = model(**batch).logits
    assert torch.equal(plain, aware)


def test_keep_all_with_the_setting_on_is_merging_off_bitwise():
    model, processor = build_tiny_model()
    batch = inputs(processor, [clip(2, 8), clip(1, 9)])
    off = model.generate(**batch, max_new_tokens=4, do_sample=False, return_dict_in_generate=True, output_logits=True)
    setting = {"method": "ltbm", "keep_ratio": 1.0, "size_aware_attention": True}
    with hf_ltbm.audio_token_merge(model, setting):
        on = model.generate(
            **batch, max_new_tokens=4, do_sample=False, return_dict_in_generate=True, output_logits=True
        )
    assert torch.equal(off.sequences, on.sequences)
    assert all(torch.equal(x, y) for x, y in zip(off.logits, on.logits))


def test_attention_implementation_follows_the_setting_and_flash_is_refused():
    model, _ = build_tiny_model(audio_token_merge="ltbm")
    lm_config = model.model.language_model.config
    assert lm_config._attn_implementation == "sdpa"
    model.set_audio_token_merge(SIZE_AWARE)
    assert lm_config._attn_implementation == "size_aware_sdpa"
    model.set_audio_token_merge("pool")
    assert lm_config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="needs an attention implementation that takes an additive bias"):
        size_aware_name("flash_attention_2")
    lm_config._attn_implementation = "eager"
    model.set_audio_token_merge(SIZE_AWARE)
    assert lm_config._attn_implementation == "size_aware_eager"


def test_setting_round_trips_through_save_pretrained(tmp_path):
    model, _ = build_tiny_model(audio_token_merge=SIZE_AWARE)
    model.save_pretrained(tmp_path)
    loaded = hf_ltbm.Qwen2AudioLTBMForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.audio_token_merge.size_aware_attention is True
    assert str(loaded.audio_token_merge) == "ltbm(keep_ratio=0.25, window=3, size_aware_attention=True)"
    assert loaded.model.language_model.config._attn_implementation == "size_aware_sdpa"
