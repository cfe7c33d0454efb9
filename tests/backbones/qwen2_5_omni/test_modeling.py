"""Qwen2.5-Omni's thinker: time-aligned positions of merged tokens, the processor's counts, and what is refused.

The shared model tests (`tests/models`) run on the thinker too: merging off is upstream, both prompt paths agree,
beam search, static cache, KV length, save/load, PEFT and device maps.
"""

import json

import numpy as np
import pytest
import torch

import hf_ltbm
from hf_ltbm import build_prompt
from hf_ltbm.compat import output_cache

from ...encoding import assert_keep_one_reproduces_upstream, qwen2_5_omni_upstream_positions
from .inputs import HALF, clip_inputs, stock_and_merged


def test_keep_one_reproduces_upstream_positions_and_outputs_exactly(tiny):
    model, processor = tiny
    assert_keep_one_reproduces_upstream(model, clip_inputs(processor))


def test_a_merged_token_sits_at_the_rounded_mean_position_of_its_members_and_text_keeps_its_time(tiny):
    model, processor = tiny
    stock, merged_inputs = stock_and_merged(processor)
    upstream, _ = qwen2_5_omni_upstream_positions(model, stock)
    with hf_ltbm.audio_token_merge(model, HALF), torch.no_grad():
        out = model(**merged_inputs)
        audio = model.get_audio_features(merged_inputs["input_features"], merged_inputs["feature_attention_mask"])
    positions, mask = out.position_ids, merged_inputs["attention_mask"].bool()
    placeholder = merged_inputs["input_ids"] == model.config.audio_token_id
    assert torch.equal(positions[0], positions[1]) and torch.equal(positions[0], positions[2])  # audio and text: 1D
    result = audio.merge_result
    for row in range(2):
        # upstream's first audio position in this row (the run starts after `<|audio_bos|>`)
        start = upstream[0, row][stock["input_ids"][row] == model.config.audio_token_id][0]
        members = [(result.assignment[row] == m).nonzero()[:, 0].float() for m in range(int(result.lengths[row]))]
        expected = torch.stack([start + torch.floor(idx.mean() + 0.5).long() for idx in members])
        assert torch.equal(positions[0, row][placeholder[row]], expected)
        # in time order, within the clip's span
        assert bool((expected[1:] >= expected[:-1]).all())
        # the text after the clip keeps the position it has in the unmerged prompt
        after_merged = positions[0, row][mask[row]][-3:]
        after_stock = upstream[0, row][stock["attention_mask"][row].bool()][-3:]
        assert torch.equal(after_merged, after_stock)
    # decoding continues from there: rope_deltas = the dropped audio tokens
    dropped = audio.num_input_tokens - audio.audio_token_counts
    assert model._merge_model.rope_deltas[:, 0].tolist() == dropped.tolist()


def test_generation_from_both_prompt_paths_gives_the_same_tokens_and_kv_length(tiny):
    model, processor = tiny
    stock, merged = stock_and_merged(processor)
    greedy = {"max_new_tokens": 4, "do_sample": False, "return_dict_in_generate": True}
    with hf_ltbm.audio_token_merge(model, HALF), torch.no_grad():
        a = model.generate(**merged, **greedy)
        b = model.generate(**stock, **greedy)
    assert torch.equal(a.sequences[:, -4:], b.sequences[:, -4:])
    placeholders = int((merged["input_ids"] == model.config.audio_token_id).sum(1).max())
    text = int(merged["attention_mask"].shape[1]) - placeholders
    assert output_cache(a).get_seq_length() == merged["input_ids"].shape[1] + 3  # the cache holds text + M
    assert text > 0


def test_thirty_seconds_at_keep_half(tiny):
    """The numbers of the closing note: 750 audio tokens per 30 s clip, 375 at keep 0.5, KV = text + 375."""
    model, processor = tiny
    clip = np.random.default_rng(1).standard_normal(16000 * 30).astype(np.float32)
    processor.set_audio_token_merge(HALF)
    try:
        inputs = processor(text=[build_prompt(processor, "describe the sound")], audio=[clip], return_tensors="pt")
    finally:
        processor.set_audio_token_merge(None)
    with hf_ltbm.audio_token_merge(model, HALF), torch.no_grad():
        out = model(**inputs, use_cache=True)
        audio = model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"])
    placeholders = int((inputs["input_ids"] == model.config.audio_token_id).sum())
    assert out.audio_token_counts.tolist() == [375] and placeholders == 375
    assert output_cache(out).get_seq_length() == inputs["input_ids"].shape[1]
    assert audio.num_input_tokens.tolist() == [750]


@pytest.mark.parametrize("key_source,method", [("encoder_keys", "ltbm"), ("features", "prune_attention")])
def test_encoder_keys_and_chunked_attention_scores(tiny, key_source, method):
    """Keys come per clip from the packed encoder; scores are the attention each frame receives within its 2 s
    chunk, pooled like the encoder's output: one score per audio token."""
    model, processor = tiny
    setting = {"method": method, "keep_ratio": 0.5}
    if key_source != "features":
        setting["key_source"] = key_source
    inputs = clip_inputs(processor)
    with hf_ltbm.audio_token_merge(model, setting), torch.no_grad():
        audio = model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"])
        out = model(**inputs)
    assert audio.audio_token_counts.tolist() == [
        hf_ltbm.output_length(int(n), keep_ratio=0.5) for n in audio.num_input_tokens
    ]
    assert torch.isfinite(out.logits).all()


def test_the_thinker_loads_from_a_whole_qwen2_5_omni_checkpoint(tiny, tmp_path):
    """A released checkpoint is the whole model (`qwen2_5_omni`: thinker, talker, vocoder): the merging thinker loads
    its `thinker_config` and `thinker.*` weights, and the CLI's loader takes the folder too."""
    from hf_ltbm.backbones import get_backbone
    from hf_ltbm.loading import load_model

    model, processor = tiny
    whole = tmp_path / "whole"
    whole.mkdir()
    get_backbone("qwen2_5_omni_thinker").save_tiny(model, processor, whole)  # the whole checkpoint's layout
    assert json.loads((whole / "config.json").read_text())["model_type"] == "qwen2_5_omni"
    loaded = type(model).from_pretrained(whole, audio_token_merge=HALF)
    assert loaded.audio_token_merge == hf_ltbm.AudioTokenMergeConfig.from_value(HALF)
    reference = model.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    assert all(torch.equal(value, reference[key]) for key, value in loaded.state_dict().items())
    via_cli = load_model(str(whole), None, torch.device("cpu"), torch.float32)
    assert type(via_cli) is type(model) and via_cli.audio_token_merge is None
    inputs = clip_inputs(processor)
    with torch.no_grad():
        assert torch.equal(via_cli(**inputs).logits, model(**inputs).logits)


def test_an_image_next_to_merged_audio(tiny):
    """An image before the clip goes through upstream's vision encoder: keep 1.0 is upstream's output, both prompt
    paths generate the same tokens, and beam search moves each row's image grid with the row."""
    from PIL import Image

    model, processor = tiny
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((56, 84, 3)) * 255).astype(np.uint8))
    clip = rng.standard_normal(16000 * 3).astype(np.float32)
    text = "<|im_start|>user\n<|vision_bos|><|IMAGE|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|>what<|im_end|>\n"

    def inputs(setting, rows=1):
        processor.set_audio_token_merge(setting)
        try:
            return processor(text=[text] * rows, images=[image] * rows, audio=[clip] * rows, return_tensors="pt")
        finally:
            processor.set_audio_token_merge(None)

    stock, merged = inputs(None), inputs(HALF)
    greedy = {"max_new_tokens": 4, "do_sample": False}
    with torch.no_grad():
        reference = model(**stock).logits
        with hf_ltbm.audio_token_merge(model, {"method": "ltbm", "keep_ratio": 1.0}):
            assert torch.equal(model(**stock).logits, reference)
        with hf_ltbm.audio_token_merge(model, HALF):
            assert torch.equal(model.generate(**stock, **greedy)[:, -4:], model.generate(**merged, **greedy)[:, -4:])
            alone = model.generate(**merged, **greedy, num_beams=2)[:, -4:]
            together = model.generate(**inputs(HALF, rows=2), **greedy, num_beams=2)[:, -4:]
    assert torch.equal(together, alone.expand(2, -1))
