"""Qwen2.5-Omni's audio that arrives with video (`use_audio_in_video=True`): upstream interleaves it with the video's
frames in 2 s chunks, and merging works chunk by chunk.

Upstream's real processor and model do the interleaving and the positions; only the video processor is a stand-in
(`tests.encoding.frames_video_processor`: Qwen2-VL's needs torchvision, which this test environment lacks).
"""

import numpy as np
import pytest
import torch

import hf_ltbm
from hf_ltbm.compat import output_cache

from ...encoding import (
    assert_keep_one_reproduces_upstream,
    qwen2_5_omni_upstream_positions,
    upstream_interleaving_warning,
)
from .inputs import AUDIO, CHUNK, HALF, TEMPLATE, VIDEO, from_video, half, video_inputs

pytestmark = upstream_interleaving_warning


def test_keep_one_reproduces_upstream_exactly(tiny_video):
    model, processor = tiny_video
    assert_keep_one_reproduces_upstream(model, video_inputs(processor), use_audio_in_video=True)


def test_merged_chunks_keep_their_place_among_the_frames_at_time_aligned_positions(tiny_video):
    model, processor = tiny_video
    stock, merged = video_inputs(processor), video_inputs(processor, HALF)
    config = model.config
    upstream, _ = qwen2_5_omni_upstream_positions(model, stock, use_audio_in_video=True)
    with hf_ltbm.audio_token_merge(model, HALF), torch.no_grad():
        out = model(**merged, use_audio_in_video=True)
        pieces = model._merge_model._prompt_audio_features(
            merged["input_features"], merged["feature_attention_mask"], merged["input_ids"], None
        )
    assert pieces.num_input_tokens.tolist() == [CHUNK, CHUNK, CHUNK, 25, 75, CHUNK]
    assert pieces.audio_token_counts.tolist() == [half(n) for n in pieces.num_input_tokens.tolist()]
    result, positions = pieces.merge_result, out.position_ids
    # each piece's first frame in the unmerged prompt, in prompt order
    firsts = []
    for row, sizes in enumerate(([CHUNK, CHUNK, CHUNK, 25], [75, CHUNK])):
        audio_positions = upstream[0, row][stock["input_ids"][row] == config.audio_token_id]
        firsts += [audio_positions[start] for start in np.cumsum([0] + sizes[:-1])]
    expected = []
    for piece, first in enumerate(firsts):
        members = [(result.assignment[piece] == m).nonzero()[:, 0].float() for m in range(int(result.lengths[piece]))]
        expected.append(torch.stack([first + torch.floor(idx.mean() + 0.5).long() for idx in members]))
    placeholder = merged["input_ids"] == config.audio_token_id
    got = torch.cat([positions[0, row][placeholder[row]] for row in range(2)])
    assert torch.equal(got, torch.cat(expected))
    assert torch.equal(positions[1][placeholder], positions[0][placeholder])  # audio: equal on all three axes
    # the video's tokens and the text keep upstream's positions in the unmerged prompt
    for row in range(2):
        keep_stock = stock["attention_mask"][row].bool() & (stock["input_ids"][row] != config.audio_token_id)
        keep_merged = merged["attention_mask"][row].bool() & ~placeholder[row]
        assert torch.equal(positions[:, row][:, keep_merged], upstream[:, row][:, keep_stock])
    # a merged chunk's tokens lie in time between the frames around it: chunk j of row 0 within [50 j, 50 j + 50)
    start = firsts[0]
    row0 = positions[0, 0][placeholder[0]] - start
    chunk_of = torch.repeat_interleave(torch.arange(4), pieces.audio_token_counts[:4])
    assert bool(((row0 >= CHUNK * chunk_of) & (row0 < CHUNK * (chunk_of + 1))).all())


def test_both_prompt_paths_generate_the_same_tokens_with_dynamic_and_static_caches(tiny_video):
    model, processor = tiny_video
    stock, merged = video_inputs(processor), video_inputs(processor, HALF)
    greedy = {"max_new_tokens": 4, "do_sample": False, "return_dict_in_generate": True, "use_audio_in_video": True}
    with hf_ltbm.audio_token_merge(model, HALF), torch.no_grad():
        a = model.generate(**merged, **greedy)
        b = model.generate(**stock, **greedy)
        assert torch.equal(a.sequences[:, -4:], b.sequences[:, -4:])
        for inputs in (merged, stock):  # a static cache
            static = model.generate(**inputs, **greedy, cache_implementation="static")
            assert torch.equal(static.sequences[:, -4:], a.sequences[:, -4:])
    # the KV cache holds the text, the video and the merged audio: the merged prompt, plus the new tokens
    assert output_cache(a).get_seq_length() == merged["input_ids"].shape[1] + 3


def test_beam_search_moves_each_rows_video_and_audio_with_the_row(tiny_video):
    """Beam search repeats each row's video grid, seconds per grid and clips with the row: a row alone and the same
    row twice in a batch give the same beams."""
    model, processor = tiny_video
    rng = np.random.default_rng(0)
    text = TEMPLATE.format(AUDIO + "and" + VIDEO + "hm")
    beams = {"max_new_tokens": 4, "do_sample": False, "num_beams": 2, "use_audio_in_video": True}
    video = np.zeros((4, 3, 56, 56), np.float32)
    clips = [rng.standard_normal(16000 * s).astype(np.float32) for s in (3, 2)]
    processor.set_audio_token_merge(HALF)
    try:
        one = processor(text=[text], videos=[video], audio=clips, return_tensors="pt", **from_video([None, 0]))
        two = processor(
            text=[text, text],
            videos=[video, video],
            audio=clips + clips,
            return_tensors="pt",
            padding=True,
            **from_video([None, 0, None, 1]),
        )
    finally:
        processor.set_audio_token_merge(None)
    with hf_ltbm.audio_token_merge(model, HALF), torch.no_grad():
        alone = model.generate(**one, **beams)[:, -4:]
        together = model.generate(**two, **beams)[:, -4:]
    assert torch.equal(together[0], alone[0]) and torch.equal(together[1], alone[0])


def test_an_interleaved_prompt_without_the_flag_is_refused(tiny_video):
    model, processor = tiny_video
    merged = video_inputs(processor, HALF)
    with hf_ltbm.audio_token_merge(model, HALF), pytest.raises(ValueError, match="use_audio_in_video=True"):
        model(**merged)
