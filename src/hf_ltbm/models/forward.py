"""The steps of the merging forward that need no model (pure torch), in the order `AudioTokenMergeModelMixin`'s
`_merging_forward` runs them:

1. checks and the placeholder plan (`compaction.plan_placeholders`; `check_compaction` refuses what compaction cannot
   serve);
2. fill: the merged audio tokens replace the placeholders (`fill_placeholders`);
3. size bias: `log(size)` of each merged token for size-aware attention (`placeholder_log_sizes`, and
   `text_key_log_sizes` for a prompt without audio);
4. positions: the backbone's `_language_model_positions` for the prompt before compaction;
5. compaction: a prompt holding the unmerged placeholder count drops the surplus (`compact_prompt`);
6. the language model call, on the (compacted) sequence.

Shapes: `B` prompts of length `L` (`L'` after compaction), `D` the text hidden size, `M` merged audio tokens in all.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch

from ..compat import cache_arguments
from ..merging import MergeResult
from .compaction import PlaceholderPlan, compact_sequence, generation_position_ids, infer_left_padding

__all__ = [
    "CompactedPrompt",
    "check_compaction",
    "compact_positions",
    "compact_prompt",
    "fill_placeholders",
    "placeholder_log_sizes",
    "text_key_log_sizes",
]


def check_compaction(kv_cache: Any, kwargs: dict[str, Any]) -> None:
    """Raises a `ValueError` for what a compacting prompt (one with the unmerged number of audio placeholders) cannot
    be combined with: a non-empty KV cache (`kv_cache`, or one under another name among the call's other arguments
    `kwargs`), which no longer lines up with `input_ids`, and `shift_labels`, aligned with the uncompacted sequence."""
    if any(cache.get_seq_length() > 0 for cache in cache_arguments({"cache": kv_cache, **kwargs})):
        raise ValueError(
            "In-model compaction (a prompt with the unmerged number of audio placeholders) cannot extend a "
            "non-empty KV cache: the cache no longer lines up with `input_ids`. Use the merging processor "
            "(`AutoProcessor.from_pretrained(..., audio_token_merge=...)`) to reuse caches."
        )
    if kwargs.get("shift_labels") is not None:
        raise ValueError(
            "`shift_labels` cannot be combined with in-model compaction (a prompt with the unmerged number of "
            "audio placeholders): they are aligned with the uncompacted sequence. Pass `labels`, which are "
            "compacted with it, or build the prompt with the merging processor "
            "(`AutoProcessor.from_pretrained(..., audio_token_merge=...)`), whose sequence is not compacted."
        )


def fill_placeholders(inputs_embeds: torch.Tensor, fill: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`inputs_embeds [B, L, D]` with the merged audio `tokens [M, D]` written, in order, where `fill [B, L]` (the
    plan's placeholders that receive a token, `M` of them) is true; cast to the embeddings' device and dtype."""
    mask = fill.to(inputs_embeds.device)[..., None]
    return inputs_embeds.masked_scatter(mask, tokens.to(inputs_embeds.device, inputs_embeds.dtype))


def placeholder_log_sizes(result: MergeResult, fill: torch.Tensor) -> torch.Tensor:
    """`[B, L]` float32: `log(size)` of the merged audio token at each filled placeholder (`fill [B, L]`, the tokens
    of `result`'s rows in order, `result.sizes [units, M_max]` valid up to `result.lengths [units]`), 0 elsewhere."""
    log_sizes = torch.zeros(fill.shape, dtype=torch.float32, device=fill.device)
    valid = torch.arange(result.sizes.shape[1], device=result.sizes.device)[None] < result.lengths[:, None]
    log_sizes[fill] = result.sizes[valid].float().log().to(fill.device)
    return log_sizes


def text_key_log_sizes(key_log_sizes: Optional[torch.Tensor], inputs_embeds: torch.Tensor) -> Optional[torch.Tensor]:
    """The size bias `[B, K]` of the language model's keys: `key_log_sizes` where the prompt's audio (or decoding's
    carried-over bias) gave one, else zeros `[B, L]` float32 for the `inputs_embeds [B, L, D]` of a step without
    audio."""
    if key_log_sizes is None and inputs_embeds is not None:  # a prompt without audio
        key_log_sizes = inputs_embeds.new_zeros(inputs_embeds.shape[:2], dtype=torch.float32)
    return key_log_sizes


def compact_positions(
    keep: torch.Tensor, left_padding: bool, positions: torch.Tensor, attention_mask: Optional[torch.Tensor]
) -> torch.Tensor:
    """Position ids `[..., B, L]` (any leading axes, e.g. the 3 of multimodal rotary ids) compacted as the sequence
    is (`compaction.compact_sequence` with `keep [B, L]` and the 2D `attention_mask [B, L]`): `[..., B, L']`."""
    flat = positions.reshape(-1, *positions.shape[-2:]).permute(1, 2, 0)  # [B, L, axes], compacted as embeddings
    flat = compact_sequence(keep, left_padding, flat, attention_mask)[0]
    return flat.permute(2, 0, 1).reshape(*positions.shape[:-1], flat.shape[1])


class CompactedPrompt(NamedTuple):
    """A prompt after compaction: `inputs_embeds [B, L', D]`, its 2D `attention_mask [B, L']`, `position_ids
    [..., B, L']` (or `None`), `labels [B, L']` and `key_log_sizes [B, L']` (each `None` where not given)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: Optional[torch.Tensor]
    labels: Optional[torch.Tensor]
    key_log_sizes: Optional[torch.Tensor]


def compact_prompt(
    plan: PlaceholderPlan,
    inputs_embeds: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    position_ids: Optional[torch.Tensor],
    labels: Optional[torch.Tensor],
    key_log_sizes: Optional[torch.Tensor],
    *,
    computed_positions: Optional[torch.Tensor],
    default_left: bool,
    ignore_index: int,
) -> CompactedPrompt:
    """Drops the placeholders `plan.keep [B, L]` leaves out of a prompt that held the unmerged count, re-padding rows
    on the side the 2D `attention_mask [B, L]` pads them (`default_left` when it shows none).

    Args:
        plan: the placeholder plan (`plan.compacts`).
        inputs_embeds (`[B, L, D]`), attention_mask (`[B, L]`, *optional*), labels (`[B, L]`, *optional*, re-padded
            with `ignore_index`), key_log_sizes (`[B, L]`, *optional*): compacted to `L'`.
        position_ids (`[B, L]`, *optional*): the caller's; rebuilt from the compacted mask, as `generate()` builds
            them.
        computed_positions (`[..., B, L]`, *optional*): positions computed for the uncompacted prompt
            (`_language_model_positions`, when the caller gave none), compacted with it.

    Returns:
        :class:`CompactedPrompt`, whose `position_ids` are the rebuilt ones, the compacted `computed_positions`, or
        `None`.
    """
    left = infer_left_padding(attention_mask, default_left=default_left)
    if computed_positions is not None:
        computed_positions = compact_positions(plan.keep, left, computed_positions, attention_mask)
    inputs_embeds, attention_mask, labels, key_log_sizes = compact_sequence(
        plan.keep,
        left,
        inputs_embeds,
        attention_mask,
        labels,
        ignore_index=ignore_index,
        key_log_sizes=key_log_sizes,
    )
    position_ids = generation_position_ids(attention_mask) if position_ids is not None else computed_positions
    return CompactedPrompt(inputs_embeds, attention_mask, position_ids, labels, key_log_sizes)
