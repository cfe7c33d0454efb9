"""Qwen2.5-Omni's pure position math (`hf_ltbm.backbones.qwen2_5_omni.positions`, shared with the vLLM plugin), on
hand-computed cases and against direct computations."""

import torch

import hf_ltbm
from hf_ltbm.backbones.qwen2_5_omni.positions import (
    chunk_sizes,
    expand_placeholder_runs,
    item_rows,
    merged_chunk_runs,
    merged_token_positions,
    rounded_time,
)

A = 9  # the audio placeholder


def test_a_clip_interleaved_with_video_is_merged_in_chunks_the_last_one_shorter():
    assert chunk_sizes(120, 50) == [50, 50, 20]
    assert chunk_sizes(100, 50) == [50, 50]
    assert chunk_sizes(30, 50) == [30]
    assert chunk_sizes(0, 50) == [0]


def test_each_run_takes_the_merged_lengths_of_the_chunk_pieces_it_holds():
    half = lambda n: n // 2  # noqa: E731
    # one chunk per run while the video lasts, then the rest (75 tokens: a chunk and a piece) in one run
    assert merged_chunk_runs([50, 50, 75], 50, half) == [25, 25, 25 + 12]
    # a run that starts inside a chunk: its pieces are the rest of that chunk and the next chunk's start
    assert merged_chunk_runs([30, 40], 50, half) == [15, 10 + 10]


def test_positions_round_half_up():
    assert rounded_time(torch.tensor([0.5, 1.49, 2.5, -0.5, 3.0])).tolist() == [1, 1, 3, 0, 3]


def test_a_prompt_with_merged_runs_expands_back_to_the_unmerged_count():
    ids = torch.tensor([[5, A, A, 6], [0, 5, A, 6]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    full_ids, full_mask, index = expand_placeholder_runs(
        ids, mask, ids == A, torch.tensor([2, 1]), torch.tensor([4, 3])
    )
    assert full_ids.tolist() == [[5, A, A, A, A, 6], [0, 5, A, A, A, 6]]
    assert full_mask.tolist() == [[1] * 6, [0, 1, 1, 1, 1, 1]]
    assert index.tolist() == [[0, 1, 2, 5], [0, 1, 2, 5]]  # each token's place in the unmerged prompt


def test_each_image_or_video_is_found_in_its_row():
    placeholder = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]).bool()
    grids = torch.tensor([[1, 1, 2], [1, 1, 2], [1, 2, 1]])  # two tokens each (merge size 1)
    assert item_rows(placeholder, grids, 1).tolist() == [0, 0, 1]


def test_a_merged_token_sits_at_the_rounded_mean_frame_of_its_members():
    x = torch.randn(2, 12, 8, generator=torch.Generator().manual_seed(0))
    result = hf_ltbm.merge_tokens(x, torch.tensor([12, 9]), method="ltbm", keep_ratio=0.5, window=3)
    starts = torch.tensor([100, 7])
    positions = merged_token_positions(starts, result)
    for row in range(2):
        for slot in range(int(result.lengths[row])):
            members = (result.assignment[row] == slot).nonzero().flatten().tolist()
            mean = sum(members) / len(members)
            assert int(positions[row, slot]) == int(starts[row]) + int(mean + 0.5)
