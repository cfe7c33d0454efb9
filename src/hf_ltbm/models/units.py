"""The merge of a batch of audio units (clips, or Audio Flamingo 3's 30 s windows) after the audio encoder, one setting
per unit: what the transformers models and the serving integrations share.

Pure torch: the encoder runs in the caller (inside `capture_merge_inputs` when a setting reads the encoder's last
layer), the projector comes in as a callable, and the settings are `AudioTokenMergeConfig`s (or `None`: that unit is
projected as it is). Units with one setting are merged together in one batch; units without encoder tokens (an AF3
clip's last window of 320 samples or fewer) keep 0 tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, TypeVar, Union

import torch
from torch import nn

from ..config import AudioTokenMergeConfig
from ..layout import tokens_for_frames
from ..merging import MergeResult
from .encoder_probe import (
    attention_heads,
    capture_last_layer_projections,
    encoder_keys,
    pool_pairs,
    received_attention,
)

__all__ = [
    "MergeInputs",
    "MergedUnits",
    "capture_merge_inputs",
    "encoder_tokens",
    "member_positions",
    "merge_inputs_at_token_rate",
    "merge_units",
    "per_item",
    "per_unit",
    "stacked_tokens",
    "unit_offsets",
]

T = TypeVar("T")
Settings = Union[Optional[AudioTokenMergeConfig], Sequence[Optional[AudioTokenMergeConfig]]]


def _per_unit(settings: Settings, units: int) -> list[Optional[AudioTokenMergeConfig]]:
    if settings is None or isinstance(settings, AudioTokenMergeConfig):
        return [settings] * units
    settings = list(settings)
    if len(settings) != units:
        raise ValueError(f"Got {len(settings)} merge settings for {units} audio units; pass one per unit.")
    return settings


def encoder_tokens(mel_frames: torch.Tensor) -> torch.LongTensor:
    """Audio-encoder tokens for `mel_frames` valid mel frames per unit (Whisper-style encoders: a stride-2
    convolution, then average pooling by 2; 750 for a full 30 s window), elementwise (`hf_ltbm.layout`)."""
    return tokens_for_frames(mel_frames.long())


def unit_offsets(counts: Sequence[int]) -> list[int]:
    """Where each item's units start among all units, and the total: `[0, c_0, c_0 + c_1, ..., sum(c)]` for items of
    `counts[i]` units each (a clip's 30 s windows or chunks)."""
    offsets = [0]
    for count in counts:
        offsets.append(offsets[-1] + int(count))
    return offsets


def per_unit(values: Sequence[T], counts: Sequence[int]) -> list[T]:
    """`values[i]` once for each of item `i`'s `counts[i]` units: a clip's merge setting for each of its windows."""
    return [value for value, count in zip(values, counts) for _ in range(int(count))]


def per_item(units: Sequence[torch.Tensor], counts: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """The merged tokens of each item: its `counts[i]` consecutive units' `[M_u, D]` rows concatenated,
    `[sum_u M_u, D]` per item."""
    offsets = unit_offsets(counts)
    return tuple(torch.cat(list(units[offsets[i] : offsets[i + 1]])) for i in range(len(counts)))


@dataclass
class MergeInputs:
    """What the settings read from the encoder's last self-attention layer, pooled to the token rate.

    Args:
        encoder_keys (`torch.Tensor` of shape `[U, T, D_head]`, *optional*): keys averaged over heads.
        scores (`torch.Tensor` of shape `[U, T]`, *optional*): attention each token receives.
    """

    encoder_keys: Optional[torch.Tensor] = None
    scores: Optional[torch.Tensor] = None


def merge_inputs_at_token_rate(inputs: MergeInputs, frames_per_token: int) -> MergeInputs:
    """Encoder keys and scores pooled to the token rate of an encoder that concatenates `frames_per_token` frames
    into one token (Voxtral; shared with the vLLM plugin).

    Args:
        inputs: as `capture_merge_inputs` yields them, at 2 encoder frames per position: `encoder_keys [U, T, D]`,
            `scores [U, T]` (750 positions per 30 s chunk).
        frames_per_token (`int`): encoder frames concatenated into one token (4).

    Returns:
        `MergeInputs` at one position per token (`[U, T * 2 // frames_per_token, ...]`: 375 per chunk).
    """
    factor = frames_per_token // 2
    while factor > 1:  # a token is `frames_per_token` frames: pool pairs until it fits
        factor //= 2
        inputs = MergeInputs(
            encoder_keys=None if inputs.encoder_keys is None else pool_pairs(inputs.encoder_keys),
            scores=None if inputs.scores is None else pool_pairs(inputs.scores[..., None])[..., 0],
        )
    return inputs


def stacked_tokens(frames: torch.Tensor, stacked: int) -> torch.Tensor:
    """`[U, T, D] -> [U, T / stacked, stacked * D]`: each `stacked` consecutive encoder frames concatenated into one
    token, as Voxtral's and GLM-ASR's projectors read them (`Backbone.stacked_frames`; 1: unchanged)."""
    return frames if stacked == 1 else frames.reshape(frames.shape[0], -1, stacked * frames.shape[-1])


@contextmanager
def capture_merge_inputs(encoder: nn.Module, settings: Settings, mel_lengths: torch.Tensor) -> Iterator[MergeInputs]:
    """Run the audio encoder inside this block: on exit the yielded `MergeInputs` holds the encoder keys and attention
    scores that `settings` (one per unit, or one for all) need, read with forward hooks from the encoder's last layer
    (nothing is captured when no setting needs them).

    Args:
        encoder: an audio encoder whose last layer's attention (`layers[-1].self_attn`) has `q_proj` and `k_proj` (or
            vLLM's packed `qkv_proj`) and `head_dim` (`encoder_probe.attention_heads`).
        settings: the merge setting of each unit the encoder runs on.
        mel_lengths (`torch.LongTensor` of shape `[U]`): valid mel frames per unit.
    """
    units = int(mel_lengths.shape[0])
    active = [s for s in _per_unit(settings, units) if s is not None]
    want_keys = any(s.uses_keys and s.key_source == "encoder_keys" for s in active)
    want_scores = any(s.requires_scores for s in active)
    inputs = MergeInputs()
    with capture_last_layer_projections(encoder, queries=want_scores, keys=want_keys or want_scores) as captured:
        yield inputs
    if not (want_keys or want_scores):
        return
    heads, key_heads, scaling = attention_heads(
        encoder.layers[-1].self_attn, captured.get("q_proj"), captured["k_proj"]
    )
    if want_keys:
        inputs.encoder_keys = encoder_keys(captured["k_proj"], key_heads)
    if want_scores:
        queries, keys = captured["q_proj"], captured["k_proj"]
        frames = (mel_lengths.long().to(queries.device) - 1) // 2 + 1  # after the stride-2 convolution
        inputs.scores = received_attention(queries, keys, heads, scaling, frames, num_key_heads=key_heads)


@dataclass
class MergedUnits:
    """The audio tokens of a batch of units after merging and projection.

    Args:
        tokens (`torch.Tensor` of shape `[sum(M_u), D_out]`): every unit's tokens, unit after unit.
        counts (`torch.LongTensor` of shape `[U]`): tokens per unit (`M_u`; `N_u` for a unit without a setting).
        result (`MergeResult`, *optional*): the merge itself when one setting covers every unit, one row per unit
            with tokens; `None` otherwise.
        positions (`torch.Tensor` of shape `[sum(M_u)]`, float32): the mean frame index, within its unit, of the
            input tokens each token stands for (`member_positions`; a unit without a setting: `0 .. N_u - 1`).
    """

    tokens: torch.Tensor
    counts: torch.LongTensor
    result: Optional[MergeResult] = None
    positions: Optional[torch.Tensor] = None

    def split(self) -> tuple[torch.Tensor, ...]:
        """The tokens of each unit: `U` tensors `[M_u, D_out]`."""
        return torch.split(self.tokens, self.counts.tolist())


def member_positions(result: MergeResult) -> torch.Tensor:
    """`[B, M_max]` float32: the mean frame index of the input tokens each output token stands for (its size-weighted
    mean time in frames; a kept or unmerged token keeps its own index exactly). 0 on padding."""
    assignment = result.assignment
    valid = assignment >= 0
    frames = torch.arange(assignment.shape[1], device=assignment.device, dtype=torch.float32).expand_as(assignment)
    total = torch.zeros(result.sizes.shape, dtype=torch.float32, device=assignment.device)
    count = torch.zeros_like(total)
    index = assignment.clamp(min=0)
    total.scatter_add_(1, index, torch.where(valid, frames, 0.0))
    count.scatter_add_(1, index, valid.float())
    return total / count.clamp(min=1)


def merge_units(
    hidden: torch.Tensor,
    lengths: torch.Tensor,
    settings: Settings,
    project: Callable[[torch.Tensor], torch.Tensor],
    inputs: Optional[MergeInputs] = None,
    before_projection: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> MergedUnits:
    """Merges each unit with its setting and projects it, in the setting's space.

    Args:
        hidden (`torch.Tensor` of shape `[U, T, D_audio]`): encoder output per unit, valid tokens first.
        lengths (`torch.LongTensor` of shape `[U]`): valid tokens per unit (`N_u`).
        settings: one `AudioTokenMergeConfig` (or `None`: no merging) per unit, or one for every unit.
        project: the multi-modal projector, `[..., D_audio] -> [..., D_out]`.
        inputs: encoder keys / attention scores (`capture_merge_inputs`) for the settings that read them.
        before_projection: what a backbone applies to encoder-space tokens before its projector that depends on
            their time (Music Flamingo's rotary time embedding): `(tokens [R, T', D_audio], positions [R, T']
            float32, units [R]) -> tokens`, where `positions` are frame indices within the unit (for a merged token
            the mean index of its members, `member_positions`) and `units` the unit index of each row. In encoder
            space it runs after the merge, so that a merged token gets the time of its group; in projector space
            every frame gets its own time before the projector, and the merge follows.

    Returns:
        `MergedUnits` with the tokens of every unit in unit order.
    """

    def to_output(tokens: torch.Tensor, positions: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return project(tokens if before_projection is None else before_projection(tokens, positions, rows))

    units, length = hidden.shape[:2]
    per_unit = _per_unit(settings, units)
    inputs = inputs or MergeInputs()
    lengths = lengths.to(hidden.device)
    counts = lengths.clone()
    pieces: list[Optional[torch.Tensor]] = [None] * units
    times: list[Optional[torch.Tensor]] = [None] * units
    result = None
    groups: dict[Optional[AudioTokenMergeConfig], list[int]] = {}
    for index, setting in enumerate(per_unit):
        if setting is None or int(lengths[index]) > 0:  # a unit without tokens has nothing to merge
            groups.setdefault(setting, []).append(index)
    for setting, members in groups.items():
        rows = torch.tensor(members, device=hidden.device)
        group, group_lengths = hidden[rows], lengths[rows]
        frames = torch.arange(length, device=hidden.device, dtype=torch.float32).expand(len(members), length)
        if setting is None:
            tokens, kept, means = to_output(group, frames, rows), group_lengths, frames
        else:
            keys = None
            if setting.uses_keys:
                keys = group if setting.key_source == "features" else inputs.encoder_keys[rows, :length]
            scores = inputs.scores[rows, :length] if setting.requires_scores else None
            if setting.space == "encoder":
                merged = setting.merge(group, group_lengths, keys=keys, scores=scores)
                means = member_positions(merged)
                tokens = to_output(merged.tokens, means, rows)
            else:
                merged = setting.merge(to_output(group, frames, rows), group_lengths, keys=keys, scores=scores)
                tokens, means = merged.tokens, member_positions(merged)
            kept = merged.lengths.to(hidden.device)
            if len(groups) == 1:
                result = merged
        for row, index in enumerate(members):
            pieces[index] = tokens[row, : int(kept[row])]
            times[index] = means[row, : int(kept[row])]
            counts[index] = kept[row]
    width = next((p.shape[-1] for p in pieces if p is not None), None)
    if width is None:  # no unit has tokens
        out = project(hidden[:, :0])
        width, dtype = out.shape[-1], out.dtype
    else:
        dtype = next(p.dtype for p in pieces if p is not None)
    empty = hidden.new_zeros(0, width, dtype=dtype)
    flat = torch.cat([empty if p is None else p for p in pieces])
    no_time = torch.zeros(0, dtype=torch.float32, device=hidden.device)
    positions = torch.cat([no_time if t is None else t.float() for t in times])
    counts[[i for i, p in enumerate(pieces) if p is None]] = 0
    return MergedUnits(tokens=flat, counts=counts, result=result, positions=positions)
