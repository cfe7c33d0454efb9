"""Qwen2.5-Omni's clips, chunks and positions: pure torch, shared by the transformers classes and the vLLM plugin.

How a prompt's placeholder runs expand back to the unmerged count, how audio that comes with video is cut into 2 s
chunks, how packed encoder states are split per clip (or chunk) and merged, and the time-aligned position of a merged
token (the size-weighted mean of its members, rounded half up). No transformers import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ...config import AudioTokenMergeConfig
from ...merging import MergeResult
from ...models.encoder_probe import capture_last_layer_projections, encoder_keys, received_attention
from ...models.units import MergedUnits, MergeInputs, member_positions, merge_units

__all__ = [
    "chunk_sizes",
    "expand_placeholder_runs",
    "item_rows",
    "merge_packed_clips",
    "merged_chunk_runs",
    "merged_token_positions",
    "rounded_time",
    "split_into_pieces",
]


def expand_placeholder_runs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    placeholder: torch.Tensor,
    in_prompt: torch.Tensor,
    num_input: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The unmerged prompt of a prompt whose units hold `in_prompt[u]` placeholders each: unit `u`'s run grows to
    `num_input[u]` placeholders (its last placeholder is repeated).

    Args:
        input_ids, attention_mask (`torch.LongTensor` of shape `[B, L]`): the prompt.
        placeholder (`torch.BoolTensor` of shape `[B, L]`): where the audio placeholders sit (units in row-major
            order, each a run of `in_prompt[u]`).
        in_prompt, num_input (`torch.LongTensor` of shape `[U]`): placeholders per unit in the prompt and unmerged.

    Returns:
        `(input_ids [B, L_full], attention_mask [B, L_full], index [B, L])`: the unmerged prompt (rows right-padded
        with masked copies of the pad) and where each token of the prompt lands in it (a unit's placeholders at its
        first frames).
    """
    repeats = torch.ones_like(input_ids)
    rows, cols = placeholder.nonzero(as_tuple=True)
    has = in_prompt > 0
    last = (in_prompt.cumsum(0) - 1)[has].to(rows.device)
    repeats[rows[last], cols[last]] += (num_input - in_prompt)[has].to(repeats.device)
    index = repeats.cumsum(1) - repeats
    full_ids = pad_sequence(
        [row.repeat_interleave(r) for row, r in zip(input_ids, repeats)], batch_first=True, padding_value=0
    )
    full_mask = pad_sequence(
        [row.repeat_interleave(r) for row, r in zip(attention_mask, repeats)], batch_first=True, padding_value=0
    )
    return full_ids, full_mask, index


def chunk_sizes(num_tokens: int, chunk: int) -> list[int]:
    """The pieces a clip of `num_tokens` audio tokens interleaved with video is merged in: chunks of `chunk` tokens
    (upstream's `position_id_per_seconds * seconds_per_chunk`), the last one shorter."""
    return [chunk] * (num_tokens // chunk) + [num_tokens % chunk] * bool(num_tokens % chunk) or [num_tokens]


def merged_chunk_runs(runs: Sequence[int], chunk: int, merged_length: Callable[[int], int]) -> list[int]:
    """The merged length of each placeholder run of a clip interleaved with video.

    Args:
        runs: the lengths of the clip's runs of audio placeholders, in order (upstream writes one chunk per run while
            the video lasts, and the chunks after its end as one run).
        chunk: tokens per chunk (`chunk_sizes`).
        merged_length: a chunk's merged length from its length.

    Returns:
        For each run, the sum of `merged_length(n)` over the chunks it holds.
    """
    out, seen = [], 0
    for n in runs:
        bounds = [seen, *range(seen - seen % chunk + chunk, seen + n, chunk), seen + n]
        out.append(sum(merged_length(end - start) for start, end in zip(bounds, bounds[1:])))
        seen += n
    return out


def _unpack(packed: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """`[sum(sizes), ...]` packed rows -> `[len(sizes), max(sizes), ...]`, each piece right-padded with zeros."""
    return pad_sequence(list(torch.split(packed, sizes)), batch_first=True)


def split_into_pieces(
    packed: torch.Tensor, inputs: MergeInputs, num_input: torch.Tensor, pieces: list[list[int]]
) -> tuple[torch.Tensor, MergeInputs, torch.Tensor]:
    """The encoder's output and merge inputs per clip, cut into the pieces the clips are merged in.

    Args:
        packed (`torch.Tensor` of shape `[sum(N_c), D]`): the pooled encoder states of every clip, clip after clip.
        inputs (`MergeInputs`): keys / scores per clip, rows `[num_clips, N_max, ...]`.
        num_input (`torch.LongTensor` of shape `[num_clips]`): tokens per clip (`N_c`).
        pieces: tokens per piece of each clip (`[N_c]` for a clip merged whole, `chunk_sizes` for one in chunks).

    Returns:
        `(hidden [P, n_max, D], inputs with rows [P, n_max, ...], lengths [P])` for the `P` pieces, right-padded.
    """
    sizes = [size for clip in pieces for size in clip]
    if len(sizes) != len(pieces):  # some clip in several pieces: its keys and scores too

        def split(rows: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            if rows is None:
                return None
            valid = torch.arange(rows.shape[1], device=rows.device)[None] < num_input.to(rows.device)[:, None]
            return _unpack(rows[valid], sizes)

        inputs = MergeInputs(split(inputs.encoder_keys), split(inputs.scores))
    return _unpack(packed, sizes), inputs, torch.tensor(sizes, device=num_input.device)


def _packed_merge_inputs(
    tower: nn.Module,
    captured: dict[str, torch.Tensor],
    frames: torch.Tensor,
    mel_lengths: torch.Tensor,
    want_keys: bool,
    want_scores: bool,
) -> MergeInputs:
    """Encoder keys / attention scores per clip `[U, N_max, ...]` from the last layer's packed projections
    `[sum(frames), D]`: keys are split per clip; scores are the attention each frame receives within its 2 s
    chunk (the encoder attends within chunks), both pooled by pairs like the encoder's output."""
    attn = tower.layers[-1].self_attn
    inputs = MergeInputs()
    if want_keys:
        inputs.encoder_keys = encoder_keys(_unpack(captured["k_proj"], frames.tolist()), attn.num_heads)
    if want_scores:
        # the encoder's attention chunks: each clip's mel frames cut into pieces of `2 * n_window`
        window = 2 * tower.n_window
        chunk_mels = [[window] * (n // window) + ([n % window] if n % window else []) for n in mel_lengths.tolist()]
        chunk_frames = (torch.tensor([m for clip in chunk_mels for m in clip]) - 1) // 2 + 1
        sizes = chunk_frames.tolist()
        queries, keys = _unpack(captured["q_proj"], sizes), _unpack(captured["k_proj"], sizes)
        scores = received_attention(queries, keys, attn.num_heads, attn.scaling, chunk_frames)
        pooled = iter(row[: n // 2] for row, n in zip(scores, sizes))  # chunks hold whole pairs but a clip's last
        clips = [torch.cat([next(pooled) for _ in clip]) for clip in chunk_mels]
        inputs.scores = pad_sequence(clips, batch_first=True)
    return inputs


def merge_packed_clips(
    tower: nn.Module,
    encode: Callable[[torch.Tensor], Any],
    mel_lengths: torch.Tensor,
    settings: Sequence[Optional[AudioTokenMergeConfig]],
    pieces: Optional[list[list[int]]] = None,
) -> tuple[torch.Tensor, torch.Tensor, MergedUnits]:
    """Runs Qwen2.5-Omni's packed audio encoder, reads its pooled states before `ln_post` / `proj` (a forward
    pre-hook) and the last layer's keys / attention scores, merges each piece of each clip with its clip's setting and
    projects it with the encoder's own `ln_post` and `proj`: what the transformers classes and the vLLM plugin share.

    Args:
        tower: the audio encoder (upstream's `Qwen2_5OmniAudioEncoder`, or vLLM's).
        encode: runs `tower` on the clips, given their frame counts after the convolutions (`aftercnn_lens`).
        mel_lengths (`torch.LongTensor` of shape `[num_clips]`): valid mel frames per clip.
        settings: the merge setting of each clip (`None`: projected as it is).
        pieces: tokens per piece of each clip (`split_into_pieces`); `None`: each clip whole.

    Returns:
        `(hidden [P, n_max, D_audio], tokens per piece [P], MergedUnits of the P pieces)`.
    """
    frames, num_input = tower._get_feat_extract_output_lengths(mel_lengths)
    active = [s for s in settings if s is not None]
    want_keys = any(s.uses_keys and s.key_source == "encoder_keys" for s in active)
    want_scores = any(s.requires_scores for s in active)
    pooled: list[torch.Tensor] = []
    handle = tower.ln_post.register_forward_pre_hook(lambda _m, args: pooled.append(args[0].detach()))
    try:
        with capture_last_layer_projections(tower, queries=want_scores, keys=want_keys or want_scores) as captured:
            encode(frames)
    finally:
        handle.remove()
    inputs = _packed_merge_inputs(tower, captured, frames, mel_lengths, want_keys, want_scores)
    pieces = [[n] for n in num_input.tolist()] if pieces is None else pieces
    hidden, inputs, sizes = split_into_pieces(pooled[0], inputs, num_input, pieces)
    piece_settings = [setting for setting, clip in zip(settings, pieces) for _ in clip]
    merged = merge_units(hidden, sizes, piece_settings, lambda tokens: tower.proj(tower.ln_post(tokens)), inputs)
    return hidden, sizes, merged


def rounded_time(mean_frames: torch.Tensor) -> torch.Tensor:
    """`mean_frames` (float, any shape: mean member frame indices, `member_positions`) rounded half up to whole
    frames (long, same shape): a merged token's position offset from its clip's first frame."""
    return torch.floor(mean_frames + 0.5).long()


def merged_token_positions(unit_starts: torch.Tensor, result: MergeResult) -> torch.Tensor:
    """`[R, M_max]` long: the position of each merged token, `start + round(mean member frame)` (half up).

    Args:
        unit_starts (`torch.LongTensor` of shape `[R]`): the position of each merged row's first frame.
        result (`MergeResult`): the merge of those rows.
    """
    return unit_starts[:, None] + rounded_time(member_positions(result)).to(unit_starts.device)


def item_rows(placeholder: torch.Tensor, grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """`[K]`: the batch row of each image or video (`grid_thw [K, 3]`, in prompt order), from where their tokens sit
    (`placeholder [B, L]`, `prod(grid) / merge_size**2` tokens each)."""
    tokens = grid_thw.prod(-1) // merge_size**2
    starts = (tokens.cumsum(0) - tokens).to(placeholder.device)
    return torch.searchsorted(placeholder.sum(1).cumsum(0), starts, right=True)
