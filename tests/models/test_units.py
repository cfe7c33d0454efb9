"""merge_units: one setting per unit, batched by setting, equal to merging each unit on its own."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_ltbm import AudioTokenMergeConfig
from hf_ltbm.models.units import (
    MergeInputs,
    encoder_tokens,
    merge_units,
    per_item,
    per_unit,
    unit_offsets,
)

from ..strategies import merge_settings

PROJECT = torch.nn.Linear(6, 5).requires_grad_(False)


@settings(max_examples=40)
@given(
    data=st.data(),
    lengths=st.lists(st.integers(0, 30), min_size=1, max_size=5),
)
def test_each_unit_is_merged_with_its_own_setting_as_if_alone(data, lengths):
    units = len(lengths)
    chosen = data.draw(st.lists(st.none() | merge_settings(every_field=True), min_size=units, max_size=units))
    hidden = torch.randn(units, 30, 6, generator=torch.Generator().manual_seed(len(lengths)))
    keys = torch.randn(units, 30, 4)
    scores = torch.rand(units, 30)
    inputs = MergeInputs(encoder_keys=keys, scores=scores)
    together = merge_units(hidden, torch.tensor(lengths), chosen, PROJECT, inputs)
    assert together.tokens.shape[0] == int(together.counts.sum())
    for u, (piece, setting, n) in enumerate(zip(together.split(), chosen, lengths)):
        alone = merge_units(
            hidden[u : u + 1], torch.tensor([n]), setting, PROJECT, MergeInputs(keys[u : u + 1], scores[u : u + 1])
        )
        if setting is None:
            assert piece.shape[0] == n
        else:
            assert piece.shape[0] == (0 if n == 0 else setting.output_length(n))
        torch.testing.assert_close(piece, alone.tokens, rtol=1e-5, atol=1e-6)
        times = torch.split(together.positions, together.counts.tolist())[u]
        assert torch.equal(times, alone.positions)  # each token's mean member frame, as if alone


def test_one_setting_for_all_units_reports_its_merge():
    hidden = torch.randn(3, 10, 6)
    setting = AudioTokenMergeConfig(method="pool", keep_ratio=0.5)
    out = merge_units(hidden, torch.tensor([10, 0, 4]), setting, PROJECT)
    assert out.counts.tolist() == [5, 0, 2] and out.result.lengths.tolist() == [5, 2]
    off = merge_units(hidden, torch.tensor([10, 0, 4]), None, PROJECT)
    assert torch.equal(off.tokens, PROJECT(hidden)[torch.arange(10)[None] < torch.tensor([10, 0, 4])[:, None]])
    mixed = merge_units(hidden, torch.tensor([10, 0, 4]), [setting, None, None], PROJECT)
    assert mixed.counts.tolist() == [5, 0, 4] and mixed.result is None


def test_positions_are_the_mean_member_frame_of_each_token():
    """`positions`: a unit without a setting keeps its frame indices; a merged unit's tokens are at the mean index of
    their members (`member_positions` of the merge), in either space."""
    hidden = torch.randn(2, 10, 6)
    pool = AudioTokenMergeConfig(method="pool", keep_ratio=0.5)
    out = merge_units(hidden, torch.tensor([10, 4]), [None, pool], PROJECT)
    assert out.positions.tolist() == [float(i) for i in range(10)] + [0.5, 2.5]
    projected = AudioTokenMergeConfig(method="pool", keep_ratio=0.5, space="projector")
    assert merge_units(hidden, torch.tensor([10, 4]), [None, projected], PROJECT).positions.tolist() == (
        out.positions.tolist()
    )


def test_settings_go_to_each_unit_and_merged_units_back_to_their_item():
    """A clip of 2 windows, one of 1 and one of 3: each window takes its clip's setting, and each clip's merged tokens
    are its windows' in order (what the vLLM plugin does for Audio Flamingo 3's windows and Voxtral's chunks)."""
    counts = [2, 1, 3]
    assert unit_offsets(counts) == [0, 2, 3, 6]
    assert per_unit(["a", None, "c"], counts) == ["a", "a", None, "c", "c", "c"]
    units = [torch.full((n, 2), float(u)) for u, n in enumerate([3, 1, 4, 2, 2, 5])]
    items = per_item(units, counts)
    assert [item.shape[0] for item in items] == [4, 4, 9]
    assert items[0][:, 0].tolist() == [0, 0, 0, 1] and items[1][:, 0].tolist() == [2] * 4
    assert torch.equal(items[2], torch.cat(units[3:]))


def test_encoder_tokens_of_whisper_style_encoders():
    """25 tokens per second: 750 for a full 30 s window (3000 mel frames), none for a single frame (an AF3 window
    of 320 samples or fewer), as the processors count them."""
    assert encoder_tokens(torch.tensor([3000, 100, 1, 4])).tolist() == [750, 25, 0, 1]
