"""Placeholder bookkeeping and sequence compaction for in-model audio-token merging (pure torch).

An audio *unit* is what the merge runs on: a clip for Qwen2-Audio, a 30 s window for Audio Flamingo 3. Units are
laid out in the text as consecutive runs of placeholder tokens, in order over the flattened `(batch, sequence)`;
unit `u` uses `N_u` placeholders when a stock processor expanded the prompt, or `M_u` when a merging processor did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    "PlaceholderPlan",
    "clip_window_indices",
    "compact_sequence",
    "expanded_order",
    "infer_left_padding",
    "plan_placeholders",
    "shorten_audio_runs",
]


@dataclass
class PlaceholderPlan:
    """Where merged audio tokens go in a batch of prompts.

    Attributes:
        fill (`torch.BoolTensor` of shape `[B, L]`): placeholder positions that receive a merged token, in order.
        keep (`torch.BoolTensor` of shape `[B, L]`): positions that stay in the sequence; `None` when no placeholder
            has to be dropped (the prompt already holds `M_u` placeholders per unit).
        unit_row (`torch.LongTensor` of shape `[U]`): the batch row each unit belongs to.
        placeholder (`torch.BoolTensor` of shape `[B, L]`): every audio placeholder of the prompt (from `input_ids`
            or, without them, from `inputs_embeds`).
    """

    fill: torch.Tensor
    keep: Optional[torch.Tensor]
    unit_row: torch.Tensor
    placeholder: torch.Tensor

    @property
    def compacts(self) -> bool:
        """Whether placeholders are dropped from the sequence (the prompt held `N_u` placeholders per unit)."""
        return self.keep is not None


def plan_placeholders(
    placeholder: torch.Tensor, num_input: torch.Tensor, num_output: torch.Tensor, token_name: str = "audio"
) -> PlaceholderPlan:
    """Matches the placeholders of a batch to its audio units.

    Args:
        placeholder (`torch.BoolTensor` of shape `[B, L]`): where the audio placeholder token sits.
        num_input (`torch.LongTensor` of shape `[U]`): audio tokens per unit before merging (`N_u`).
        num_output (`torch.LongTensor` of shape `[U]`): audio tokens per unit after merging (`M_u`).
        token_name (`str`): the placeholder's name, for error messages.

    Returns:
        :class:`PlaceholderPlan`. With `sum(M_u)` placeholders the merged tokens fill them all; with `sum(N_u)`
        placeholders unit `u` keeps the first `M_u` of its `N_u` and the rest are dropped from the sequence.

    Raises:
        ValueError: if the number of placeholders is neither `sum(N_u)` nor `sum(M_u)`.
    """
    total = int(placeholder.sum())
    expected_in, expected_out = int(num_input.sum()), int(num_output.sum())
    if total == expected_out:
        counts, keep_first = num_output, None
    elif total == expected_in:
        counts, keep_first = num_input, num_output
    else:
        raise ValueError(
            f"The prompts hold {total} {token_name} placeholder tokens, but the {len(num_input)} audio unit(s) give "
            f"{expected_in} tokens before merging (per unit: {num_input.tolist()}) and {expected_out} after "
            f"(per unit: {num_output.tolist()}). Use the merging processor (which emits the merged count) or a stock "
            "processor with the same audio (which emits the unmerged count)."
        )
    device = placeholder.device
    counts = counts.to(device)
    starts = counts.cumsum(0) - counts  # flat placeholder index where each unit starts
    flat = placeholder.reshape(-1)
    order = flat.cumsum(0) - 1  # placeholder index of every flat position
    unit = torch.searchsorted(counts.cumsum(0), order, right=True).clamp(max=max(len(counts) - 1, 0))
    row_of_flat = torch.arange(flat.numel(), device=device) // placeholder.shape[1]
    first_flat = flat.nonzero().flatten()
    # The row of a unit: that of its first placeholder; a unit without any (an AF3 window with no encoder token)
    # belongs to the row of the placeholder before it, the previous window of the same clip.
    position = torch.where(counts > 0, starts, (starts - 1).clamp(min=0))
    unit_row = row_of_flat[first_flat[position]] if total else torch.zeros_like(counts)
    if keep_first is None:
        return PlaceholderPlan(fill=placeholder, keep=None, unit_row=unit_row, placeholder=placeholder)
    kept = (order - starts[unit]) < keep_first.to(device)[unit]
    fill = (flat & kept).view_as(placeholder)
    return PlaceholderPlan(fill=fill, keep=~placeholder | fill, unit_row=unit_row, placeholder=placeholder)


def expanded_order(item_row: torch.Tensor, batch_size: int, expand_size: int) -> torch.Tensor:
    """`[K * expand_size]` long (on the CPU): indices into per-item rows that repeat each batch row's items
    `expand_size` times, as generation repeats the batch rows (beam search, `num_return_sequences`).

    Args:
        item_row (`torch.LongTensor` of shape `[K]`): the batch row of each item (audio units, images, videos), in
            prompt order.
        batch_size (`int`): rows in the batch.
        expand_size (`int`): copies of each row.
    """
    per_row = torch.bincount(item_row.cpu(), minlength=batch_size)
    starts = per_row.cumsum(0) - per_row
    blocks = [torch.arange(int(s), int(s + c)) for s, c in zip(starts, per_row)]
    return torch.cat([block for block in blocks for _ in range(expand_size)])


def infer_left_padding(attention_mask: Optional[torch.Tensor], default_left: bool) -> bool:
    """Whether a batch is left-padded, from its 2D attention mask (`default_left` when there is no padding)."""
    if attention_mask is None or attention_mask.ndim != 2:
        return default_left
    left = bool((attention_mask[:, 0] == 0).any())
    right = bool((attention_mask[:, -1] == 0).any())
    if left and right:
        raise ValueError("The attention mask has padding on both sides; pad every row on the same side.")
    return left if (left or right) else default_left


def compact_sequence(
    keep: torch.Tensor,
    left_padding: bool,
    inputs_embeds: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    labels: Optional[torch.Tensor] = None,
    ignore_index: int = -100,
    key_log_sizes: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Drops the positions where `keep` is False (and the old padding) and re-pads rows on the same side.

    Args:
        keep (`torch.BoolTensor` of shape `[B, L]`): positions that stay.
        left_padding (`bool`): re-pad rows on the left (generation) or on the right (training).
        inputs_embeds (`torch.Tensor` of shape `[B, L, D]`): embeddings.
        attention_mask (`torch.Tensor` of shape `[B, L]`, *optional*): 2D mask (`None`: all ones).
        labels (`torch.LongTensor` of shape `[B, L]`, *optional*): labels, re-padded with `ignore_index`.
        key_log_sizes (`torch.FloatTensor` of shape `[B, L]`, *optional*): size-aware attention bias, re-padded with 0.

    Returns:
        `(inputs_embeds [B, L'], attention_mask [B, L'], labels [B, L'] or None, key_log_sizes [B, L'] or None)`
        with `L' = max(keep.sum(1))`.
    """
    batch, length = keep.shape
    device = inputs_embeds.device
    if attention_mask is None:
        attention_mask = torch.ones(batch, length, dtype=torch.long, device=device)
    # Old padding goes too: rows are re-padded to the new longest row, as a processor would have padded them.
    keep = keep.to(device) & (attention_mask.to(device) != 0)
    new_len = keep.sum(1)
    width = int(new_len.max())
    slot = keep.cumsum(1) - 1
    if left_padding:
        slot = slot + (width - new_len)[:, None]
    rows, cols = keep.nonzero(as_tuple=True)
    target = (rows, slot[rows, cols])
    embeds = inputs_embeds.new_zeros(batch, width, inputs_embeds.shape[-1])
    embeds[target] = inputs_embeds[rows, cols]
    mask = attention_mask.new_zeros(batch, width)
    mask[target] = attention_mask.to(device)[rows, cols]
    new_labels = None
    if labels is not None:
        new_labels = labels.new_full((batch, width), ignore_index)
        new_labels[target] = labels.to(device)[rows, cols]
    new_sizes = None
    if key_log_sizes is not None:
        new_sizes = key_log_sizes.new_zeros(batch, width)
        new_sizes[target] = key_log_sizes.to(device)[rows, cols]
    return embeds, mask, new_labels, new_sizes


def generation_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids from a 2D mask, as `generate()` builds them: `cumsum - 1`, 0 on padding."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


def clip_window_indices(placeholder: torch.Tensor, counts: torch.Tensor) -> torch.LongTensor:
    """The index of each audio unit (30 s window) within its clip, as upstream reads it from the prompt: a clip is a
    run of consecutive placeholders, and its windows fill it in order.

    Args:
        placeholder (`torch.BoolTensor` of shape `[B, L]`): where the `<sound>` placeholder sits.
        counts (`torch.LongTensor` of shape `[U]`): placeholders per unit in this prompt (`N_u` for a stock prompt,
            `M_u` for a merging processor's).

    Returns:
        `torch.LongTensor` of shape `[U]`: 0 for a clip's first window, 1 for its second, ...
    """
    edges = torch.diff(F.pad(placeholder.int(), (1, 1)), dim=1)
    run_starts, run_ends = (edges == 1).nonzero()[:, 1], (edges == -1).nonzero()[:, 1]
    run_end = (run_ends - run_starts).cumsum(0)  # flat placeholder index where each clip ends
    counts = counts.to(run_end.device)
    starts = counts.cumsum(0) - counts
    # A unit without placeholders (a last window too short for a token) belongs to the clip before it.
    position = torch.where(counts > 0, starts, (starts - 1).clamp(min=0))
    clip = torch.searchsorted(run_end, position, right=True)
    first = torch.searchsorted(clip, clip)  # units are in clip order: the first unit of each unit's clip
    return torch.arange(len(counts), device=clip.device) - first


def shorten_audio_runs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    audio_token_id: int,
    per_chunk: int,
    merged: int,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewrites mistral-common's prompts to the merged placeholder count: every run of `audio_token_id` (one clip,
    `per_chunk` tokens per 30 s chunk) keeps `merged` tokens per chunk. Rows are re-padded on their own side.

    Args:
        input_ids, attention_mask (`torch.LongTensor` of shape `[B, L]`): the tokenised prompts.
        audio_token_id (`int`): `[AUDIO]`'s id; per_chunk (`int`): placeholders per chunk (375); merged (`int`): the
            merged count per chunk; pad_id (`int`): the padding id.

    Returns:
        `(input_ids, attention_mask)` of shape `[B, L']`.
    """
    left = bool(attention_mask.shape[1]) and bool((attention_mask[:, 0] == 0).any())
    rows = []
    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
        tokens = [t for t, m in zip(ids, mask) if m]
        out, run = [], 0
        for token in [*tokens, None]:
            if token == audio_token_id:
                run += 1
                continue
            if run:
                if run % per_chunk:
                    raise ValueError(
                        f"A run of {run} audio placeholders is not a whole number of {per_chunk}-token chunks."
                    )
                out += [audio_token_id] * (run // per_chunk * merged)
                run = 0
            if token is not None:
                out.append(token)
        rows.append(out)
    width = max(map(len, rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=input_ids.dtype)
    mask = torch.zeros((len(rows), width), dtype=attention_mask.dtype)
    for r, row in enumerate(rows):
        where = slice(width - len(row), width) if left else slice(0, len(row))
        ids[r, where] = torch.tensor(row, dtype=input_ids.dtype)
        mask[r, where] = 1
    return ids, mask
