"""Voxtral: model classes for chunks without a feature mask, and the merging processor that shortens
mistral-common's placeholder runs, on tiny configs and a tiny tekken tokenizer (the shared model tests build
prompts with partial windows, which Voxtral does not have; the pipeline, tiny-model and size-aware tests cover it
through `TINY_MODELS`)."""

import base64
import dataclasses
import io

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import VoxtralForConditionalGeneration

import hf_ltbm
from hf_ltbm.backbones.voxtral import VoxtralLTBMForConditionalGeneration, VoxtralLTBMProcessor
from hf_ltbm.compat import output_cache
from hf_ltbm.tiny import TinySpec, build_tiny_config, build_tiny_processor

mistral_common = pytest.importorskip("mistral_common", reason="Voxtral's processor needs mistral-common")

#: One-layer models with a narrow encoder (hf_ltbm.tiny's sizes otherwise); `window_seconds=2`: 2 s chunks of 100
#: encoder positions, 25 tokens.
SPEC = TinySpec(
    hidden_size=32,
    num_attention_heads=2,
    num_key_value_heads=1,
    num_hidden_layers=1,
    audio_hidden_size=16,
    audio_attention_heads=2,
    audio_layers=1,
)
_TOKENIZER = build_tiny_processor("tiny-random-voxtral", upstream=True).tokenizer
AUDIO, BEGIN_AUDIO = _TOKENIZER.convert_tokens_to_ids(["[AUDIO]", "[BEGIN_AUDIO]"])


def config(window_seconds=30):
    return build_tiny_config("tiny-random-voxtral", spec=dataclasses.replace(SPEC, window_seconds=window_seconds))


def models(**kwargs):
    torch.manual_seed(0)
    upstream = VoxtralForConditionalGeneration(config(**kwargs)).eval()
    ours = VoxtralLTBMForConditionalGeneration(config(**kwargs)).eval()
    ours.load_state_dict(upstream.state_dict())
    return upstream, ours


def prompts(chunks_per_row, per_chunk):
    """mistral-common's layout: `<s> [INST] [BEGIN_AUDIO] [AUDIO]*(per_chunk * chunks) text [/INST]`, left-padded."""
    rows = [[1, 3, BEGIN_AUDIO] + [AUDIO] * (per_chunk * c) + [40, 41, 4] for c in chunks_per_row]
    width = max(map(len, rows))
    ids, mask = torch.full((len(rows), width), 11), torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row) :], mask[r, width - len(row) :] = torch.tensor(row), 1
    return ids, mask


def test_merging_off_and_keep_one_are_upstream_and_both_prompt_paths_agree():
    upstream, ours = models(window_seconds=2)  # 2 s chunks: 100 frames, 25 tokens
    features = torch.randn(3, 128, 200, generator=torch.Generator().manual_seed(0))
    ids, mask = prompts([2, 1], 25)
    with torch.no_grad():
        expected = upstream(input_ids=ids, attention_mask=mask, input_features=features).logits
        assert torch.equal(ours(input_ids=ids, attention_mask=mask, input_features=features).logits, expected)
        ours.set_audio_token_merge({"method": "ltbm", "keep_ratio": 1.0})
        assert torch.equal(ours(input_ids=ids, attention_mask=mask, input_features=features).logits, expected)
        setting = {"method": "ltbm", "keep_ratio": 0.5}
        ours.set_audio_token_merge(setting)
        m = hf_ltbm.output_length(25, keep_ratio=0.5)
        merged_ids, merged_mask = prompts([2, 1], m)
        stock = ours(input_ids=ids, attention_mask=mask, input_features=features, use_cache=True)
        merged = ours(input_ids=merged_ids, attention_mask=merged_mask, input_features=features, use_cache=True)
        assert torch.allclose(stock.logits[:, -1], merged.logits[:, -1], atol=1e-5)
        cache = output_cache(stock)
        assert cache.get_seq_length() == merged_ids.shape[1] == 6 + 2 * m  # text + merged tokens (row 0)
        for kwargs in ({"num_beams": 2}, {}):
            a = ours.generate(input_ids=ids, attention_mask=mask, input_features=features, max_new_tokens=3, **kwargs)
            b = ours.generate(
                input_ids=merged_ids, attention_mask=merged_mask, input_features=features, max_new_tokens=3, **kwargs
            )
            assert torch.equal(a[:, -3:], b[:, -3:])
        for reads_encoder in ({"method": "prune_attention"}, {"method": "ltbm", "key_source": "encoder_keys"}):
            ours.set_audio_token_merge({**reads_encoder, "keep_ratio": 0.5})  # scores / keys pooled to 4 frames
            audio = ours.get_audio_features(features)
            assert audio.num_input_tokens.tolist() == [25, 25, 25] and audio.audio_token_counts.tolist() == [m, m, m]


def _wav(seconds, seed):
    buffer = io.BytesIO()
    wave = (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)
    sf.write(buffer, wave, 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_merging_processor_shortens_mistral_commons_runs_per_chunk(tmp_path):
    stock = build_tiny_processor("tiny-random-voxtral", upstream=True)
    merging = build_tiny_processor("tiny-random-voxtral", audio_token_merge={"method": "ltbm", "keep_ratio": 0.5})
    assert type(merging) is VoxtralLTBMProcessor
    chats = [
        [{"role": "user", "content": [{"type": "audio", "base64": _wav(35, 0)}, {"type": "text", "text": "hi"}]}],
        [{"role": "user", "content": [{"type": "audio", "base64": _wav(5, 1)}, {"type": "text", "text": "hello"}]}],
    ]
    call = dict(tokenize=True, return_dict=True, return_tensors="pt", padding=True)
    a, b = stock.apply_chat_template(chats, **call), merging.apply_chat_template(chats, **call)
    m = hf_ltbm.output_length(375, keep_ratio=0.5)
    assert (a["input_ids"] == AUDIO).sum(1).tolist() == [750, 375]  # 35 s = two 30 s chunks
    assert (b["input_ids"] == AUDIO).sum(1).tolist() == [2 * m, m]
    assert torch.equal(a["input_features"], b["input_features"])
    text = a["attention_mask"].sum(1) - (a["input_ids"] == AUDIO).sum(1)
    assert (b["attention_mask"].sum(1) - (b["input_ids"] == AUDIO).sum(1)).tolist() == text.tolist()
    assert (b["attention_mask"][:, 0] == 0).tolist() == [False, True]  # left padding kept
    _, model = models()
    model.set_audio_token_merge({"method": "ltbm", "keep_ratio": 0.5})
    with torch.no_grad():
        from_stock = model.generate(**a, max_new_tokens=3, do_sample=False)
        from_merging = model.generate(**b, max_new_tokens=3, do_sample=False)
    assert torch.equal(from_stock[:, -3:], from_merging[:, -3:])


def test_static_cache_and_a_saved_folder_round_trip(tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoProcessor

    from hf_ltbm.tiny import build_tiny_model

    setting = {"method": "ltbm", "keep_ratio": 0.5}
    model, processor = build_tiny_model("tiny-random-voxtral", audio_token_merge=setting)
    chat = [{"role": "user", "content": [{"type": "audio", "base64": _wav(3, 2)}, {"type": "text", "text": "hi"}]}]
    inputs = processor.apply_chat_template([chat], tokenize=True, return_dict=True, return_tensors="pt")
    assert int((inputs["input_ids"] == AUDIO).sum()) == hf_ltbm.output_length(375, keep_ratio=0.5)
    dynamic = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    static = model.generate(**inputs, max_new_tokens=4, do_sample=False, cache_implementation="static")
    assert torch.equal(dynamic, static)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is VoxtralLTBMForConditionalGeneration and loaded.audio_token_merge.keep_ratio == 0.5
    assert type(loaded_processor) is VoxtralLTBMProcessor and loaded_processor.merge_config.keep_ratio == 0.5
    again = loaded_processor.apply_chat_template([chat], tokenize=True, return_dict=True, return_tensors="pt")
    assert torch.equal(again["input_ids"], inputs["input_ids"])
    assert torch.equal(loaded.generate(**again, max_new_tokens=4, do_sample=False), dynamic)


def test_a_transcription_request_gets_the_merged_count_and_the_stock_requests_tokens():
    from hf_ltbm.tiny import build_tiny_model

    model, merging = build_tiny_model("tiny-random-voxtral", audio_token_merge={"method": "ltbm", "keep_ratio": 0.5})
    stock = build_tiny_processor("tiny-random-voxtral", upstream=True)
    clip = (0.1 * np.random.default_rng(0).standard_normal(16000 * 35)).astype(np.float32)
    request = dict(model_id="mistralai/Voxtral-Mini-3B-2507", language="en", sampling_rate=16000, format=["wav"])
    a = stock.apply_transcription_request(audio=clip, return_tensors="pt", **request)
    b = merging.apply_transcription_request(audio=clip, return_tensors="pt", **request)
    assert int((a["input_ids"] == AUDIO).sum()) == 750
    assert int((b["input_ids"] == AUDIO).sum()) == 2 * hf_ltbm.output_length(375, keep_ratio=0.5)
    with torch.no_grad():
        from_stock = model.generate(**a, max_new_tokens=3, do_sample=False)
        from_merging = model.generate(**b, max_new_tokens=3, do_sample=False)
    assert torch.equal(from_stock[:, -3:], from_merging[:, -3:])


def test_lora_on_the_language_model_and_an_offloaded_device_map(tmp_path):
    """The shared PEFT and device-map tests, on Voxtral's chunks: a LoRA step, save, reload and merge give the same
    logits; a model split across CPU and disk offload gives the single-device output."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    setting = {"method": "ltbm", "keep_ratio": 0.5}
    features = torch.randn(3, 128, 200, generator=torch.Generator().manual_seed(1))
    ids, mask = prompts([2, 1], hf_ltbm.output_length(25, keep_ratio=0.5))
    inputs = {"input_ids": ids, "attention_mask": mask, "input_features": features}
    upstream, model = models(window_seconds=2)
    model.set_audio_token_merge(setting)
    lora = LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)", lora_dropout=0.0)
    peft_model = get_peft_model(model, lora)
    for module in peft_model.modules():
        if hasattr(module, "lora_B"):
            for p in module.lora_B.parameters():
                p.data.normal_(0, 0.02)
    labels = ids.masked_fill((ids == AUDIO) | (mask == 0), -100)
    peft_model.train()
    peft_model(**inputs, labels=labels).loss.backward()
    torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.1).step()
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**inputs).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    _, fresh = models(window_seconds=2)
    fresh.set_audio_token_merge(setting)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    merged = reloaded.merge_and_unload()
    assert type(merged) is VoxtralLTBMForConditionalGeneration
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, expected, atol=1e-5, rtol=1e-4)

    upstream.save_pretrained(tmp_path / "ckpt")
    single = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ckpt", audio_token_merge=setting)
    device_map = {
        "model.audio_tower": "cpu",
        "model.multi_modal_projector": "cpu",
        "model.language_model.embed_tokens": "cpu",
        "model.language_model.layers.0": "disk",
        "model.language_model.norm": "cpu",
        "model.language_model.rotary_emb": "cpu",
        "lm_head": "disk",
    }
    split = AutoModelForSeq2SeqLM.from_pretrained(
        tmp_path / "ckpt", audio_token_merge=setting, device_map=device_map, offload_folder=tmp_path / "offload"
    )
    assert type(split) is VoxtralLTBMForConditionalGeneration and split.hf_device_map["lm_head"] == "disk"
    with torch.no_grad():
        assert torch.equal(split(**inputs).logits, single(**inputs).logits)
    greedy = {"max_new_tokens": 3, "do_sample": False}
    assert torch.equal(split.generate(**inputs, **greedy), single.generate(**inputs, **greedy))


def test_norm_preserving_merging_agrees_between_prompt_paths_and_survives_save_load(tmp_path):
    _, ours = models(window_seconds=2)
    features = torch.randn(3, 128, 200, generator=torch.Generator().manual_seed(0))
    ids, mask = prompts([2, 1], 25)
    setting = {"method": "pool", "keep_ratio": 0.5, "preserve_norm": True}
    m = hf_ltbm.output_length(25, keep_ratio=0.5)
    merged_ids, merged_mask = prompts([2, 1], m)
    for space in ("encoder", "projector"):
        ours.set_audio_token_merge({**setting, "space": space})
        with torch.no_grad():
            stock = ours(input_ids=ids, attention_mask=mask, input_features=features).logits
            merged = ours(input_ids=merged_ids, attention_mask=merged_mask, input_features=features).logits
            assert torch.allclose(stock[:, -1], merged[:, -1], atol=1e-5)
            plain = ours.get_audio_features(features).pooler_output
            ours.set_audio_token_merge({**setting, "space": space, "preserve_norm": False})
            assert not torch.equal(plain, ours.get_audio_features(features).pooler_output)
        ours.set_audio_token_merge({**setting, "space": space})
        for kwargs in ({"num_beams": 2}, {}):
            a = ours.generate(input_ids=ids, attention_mask=mask, input_features=features, max_new_tokens=3, **kwargs)
            b = ours.generate(
                input_ids=merged_ids, attention_mask=merged_mask, input_features=features, max_new_tokens=3, **kwargs
            )
            assert torch.equal(a[:, -3:], b[:, -3:])
    ours.save_pretrained(tmp_path)
    loaded = VoxtralLTBMForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.audio_token_merge == hf_ltbm.AudioTokenMergeConfig.from_value({**setting, "space": "projector"})
