"""The merging processor of Qwen2.5-Omni's thinker: `M` placeholders per clip, and per 2 s chunk for audio that comes
with video (everything else upstream's, token for token)."""

import torch

import hf_ltbm

from ...encoding import upstream_interleaving_warning
from .inputs import CHUNK, HALF, half, runs, stock_and_merged, video_inputs


def test_the_processor_emits_the_merged_count_per_clip(tiny):
    _, processor = tiny
    stock, merged = stock_and_merged(processor)
    token = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
    n = (stock["input_ids"] == token).sum(1)
    assert n.tolist() == [75, 125]  # 3 s and 5 s at 25 tokens per second
    assert (merged["input_ids"] == token).sum(1).tolist() == [hf_ltbm.output_length(int(k), keep_ratio=0.5) for k in n]
    assert torch.equal(merged["input_features"], stock["input_features"])


@upstream_interleaving_warning
def test_the_processor_emits_merged_counts_per_chunk(tiny_video):
    model, processor = tiny_video
    stock, merged = video_inputs(processor), video_inputs(processor, HALF)
    audio, video = model.config.audio_token_id, model.config.video_token_id
    # upstream's interleaving: audio runs between the video's chunks; past the video's end the chunks follow on
    assert runs(stock["input_ids"][0], audio) == [CHUNK, CHUNK, CHUNK + 25]
    assert runs(merged["input_ids"][0], audio) == [half(CHUNK), half(CHUNK), half(CHUNK) + half(25)]
    # row 1: the clip on its own is merged whole (75 tokens), the video's 2 s track is one chunk
    assert runs(stock["input_ids"][1], audio) == [75, CHUNK]
    assert runs(merged["input_ids"][1], audio) == [half(75), half(CHUNK)]
    # everything else is upstream's, token for token
    for row in range(2):
        rest = [
            ids[(ids != audio) & (mask == 1)]
            for ids, mask in ((s["input_ids"][row], s["attention_mask"][row]) for s in (stock, merged))
        ]
        assert torch.equal(*rest)
    assert runs(merged["input_ids"][0], video) == runs(stock["input_ids"][0], video) == [8, 8, 4]
    for key in ("input_features", "feature_attention_mask", "pixel_values_videos", "video_grid_thw"):
        assert torch.equal(merged[key], stock[key])
