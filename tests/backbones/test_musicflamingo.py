"""Music Flamingo: time-aligned rotary positions for merged tokens (the mean time of their members), exactly
upstream's at keep 1.0, the windows of each clip read from the prompt, and bos/eos around the merged placeholders."""

import pytest
import torch
from transformers import MusicFlamingoProcessor
from transformers.models.musicflamingo.modeling_musicflamingo import apply_rotary_time_emb

import hf_ltbm
from hf_ltbm.backbones import musicflamingo
from hf_ltbm.models.compaction import clip_window_indices
from hf_ltbm.models.units import member_positions

from .common import clips, prompt_inputs, tiny_with_upstream

NAME = "tiny-random-musicflamingo"


@pytest.fixture(scope="module")
def tiny():
    return tiny_with_upstream(NAME)


def _inputs(processor, audio):
    return prompt_inputs(processor, audio, "describe the music")


def test_clip_window_indices_follow_the_placeholder_runs():
    # row 0: a clip of two windows (5 + 3 placeholders), text, a clip of one window (4); row 1: three windows, the
    # last too short for a token (2 + 1 + 0)
    rows = [[0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    placeholder = torch.tensor(rows, dtype=torch.bool)
    assert clip_window_indices(placeholder, torch.tensor([5, 3, 4, 2, 1, 0])).tolist() == [0, 1, 0, 0, 1, 2]


def test_unmerged_frames_get_exactly_upstreams_rotation(tiny):
    model, _, _ = tiny
    base = model.model
    frames = model.config.audio_config.max_source_positions // 2
    hidden = torch.randn(3, frames, model.config.audio_config.hidden_size)
    windows = torch.tensor([0, 1, 0])  # two windows of one clip, then a clip of one window
    # upstream: timestamps from the window index and the frame index, then its rotary module
    step = model.config.audio_frame_step * 4
    timestamps = windows.unsqueeze(1) * frames * step + torch.arange(frames, dtype=torch.float32) * step
    cos, sin = base.pos_emb(timestamps, seq_len=frames)
    expected = apply_rotary_time_emb(hidden, cos, sin)
    positions = torch.arange(frames, dtype=torch.float32).expand(3, frames)
    assert torch.equal(base._rotate_in_time(hidden, positions, torch.arange(3), windows), expected)


def test_keep_one_reproduces_upstream_exactly_on_both_prompt_paths(tiny):
    model, processor, upstream = tiny
    inputs = _inputs(processor, clips(35, 5))  # a clip of two windows and a clip of one
    with torch.no_grad():
        expected = upstream(**inputs).logits
        with hf_ltbm.audio_token_merge(model, {"method": "ltbm", "keep_ratio": 1.0}, processor):
            merged_prompt = _inputs(processor, clips(35, 5))
            assert torch.equal(merged_prompt["input_ids"], inputs["input_ids"])
            assert torch.equal(model(**inputs).logits, expected)


def test_a_merged_token_is_rotated_at_the_mean_time_of_its_members(tiny, monkeypatch):
    """Fixed pooling at keep 0.5 averages frames (2j, 2j + 1) of a full window: merged token j sits at frame 2j + 0.5,
    i.e. at window * 30 s + (2j + 0.5) * 40 ms. LTBM's groups are uneven: each token's position is the mean frame of
    the input tokens assigned to it."""
    model, processor, _ = tiny
    seen = []
    original = musicflamingo.MusicFlamingoLTBMModel._rotate_in_time

    def record(self, tokens, positions, units, windows):
        seen.append((positions.clone(), units.clone(), windows.clone()))
        return original(self, tokens, positions, units, windows)

    monkeypatch.setattr(musicflamingo.MusicFlamingoLTBMModel, "_rotate_in_time", record)
    audio = clips(35, 5)
    with torch.no_grad(), hf_ltbm.audio_token_merge(model, {"method": "pool", "keep_ratio": 0.5}, processor):
        model(**_inputs(processor, audio))
    ((positions, units, windows),) = seen
    assert windows.tolist() == [0, 1, 0] and units.tolist() == [0, 1, 2]
    assert torch.equal(positions[0], torch.arange(375, dtype=torch.float32) * 2 + 0.5)  # a full window
    # 5 s: 125 tokens -> 63 segments [floor(j * 125 / 63), floor((j + 1) * 125 / 63)), the first of one frame
    bounds = [j * 125 // 63 for j in range(64)]
    expected = torch.tensor([(bounds[j] + bounds[j + 1] - 1) / 2 for j in range(63)])
    assert torch.equal(positions[1, :63], expected) and positions[1, :3].tolist() == [0.0, 1.5, 3.5]
    seconds = windows[units].unsqueeze(1) * 30 + positions * 0.04
    assert seconds[1, :2].tolist() == pytest.approx([30.0, 30.06])  # the second window: 30 s + frame * 40 ms
    assert seconds[0, :2].tolist() == pytest.approx([0.02, 0.1])

    seen.clear()
    with torch.no_grad(), hf_ltbm.audio_token_merge(model, {"method": "ltbm", "keep_ratio": 0.25}, processor):
        inputs = _inputs(processor, audio)
        out = model.get_audio_features(inputs["input_features"], inputs["input_features_mask"], inputs["input_ids"])
    ((positions, _, _),) = seen
    result = out.merge_result
    assert torch.equal(positions, member_positions(result))
    # every position is the mean of its members' frame indices
    for row in range(result.assignment.shape[0]):
        assignment = result.assignment[row]
        for token in range(int(result.lengths[row])):
            members = (assignment == token).nonzero().flatten().float()
            assert positions[row, token].item() == pytest.approx(members.mean().item())


def test_the_merging_processor_keeps_one_bos_eos_pair_per_clip(tiny):
    model, processor, _ = tiny
    with hf_ltbm.audio_token_merge(model, {"method": "ltbm", "keep_ratio": 0.5}, processor):
        inputs = _inputs(processor, clips(35, 5))
    tokenizer = processor.tokenizer
    ids = inputs["input_ids"]
    bos, eos = tokenizer.convert_tokens_to_ids(["<|sound_bos|>", "<|sound_eos|>"])
    assert (ids == bos).sum(1).tolist() == [1, 1] and (ids == eos).sum(1).tolist() == [1, 1]
    m = [hf_ltbm.output_length(n, keep_ratio=0.5) for n in (750, 125)]  # 35 s = a full window + 5 s
    assert (ids == model.config.audio_token_id).sum(1).tolist() == [sum(m), hf_ltbm.output_length(125, keep_ratio=0.5)]
    assert isinstance(processor, MusicFlamingoProcessor)
