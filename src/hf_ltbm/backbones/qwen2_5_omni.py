"""Qwen2.5-Omni's thinker (text output): one merge per audio clip, with time-aligned multimodal rotary positions.

The thinker's audio encoder packs every clip's frames into one sequence (attention within 2 s chunks), pools them by
2 (25 tokens per second) and projects them (`ln_post`, `proj`) inside the encoder. Merging runs between the pooling
and that projection (`space="encoder"`), or on the projected tokens (`space="projector"`).

Positions. The language model rotates each token by a 3D position (time, height, width); an audio token's three are
its time in 40 ms steps from the start of its clip's run (`get_rope_index`), and the text after a clip starts after
its last frame. A merged token stands for several frames: it gets the **size-weighted mean position of its members,
rounded to the nearest step** (half up). The mean is the time whose rotation best matches the members' rotations for
small spreads; it equals a kept token's own position, so at keep ratio 1.0 every position is upstream's exactly.
Rounding keeps positions integers, as upstream's are (and as vLLM stores them). Text, images and videos keep the
positions upstream gives the unmerged prompt, so the positions after a merged clip keep meaning time and the prompt has
a gap where the dropped frames were (`rope_deltas`, used while decoding, records it). Upstream's positions are computed
on the unmerged prompt: a prompt from the merging processor has its runs expanded back to `N` placeholders first.

Audio that arrives with video (`use_audio_in_video=True`; `load_audio_from_video=True` for the processor on 5.20 and
later) is interleaved with the video's tokens by upstream, one `seconds_per_chunk` (2 s, 50 tokens) chunk of audio
after each chunk of frames. Such a clip is merged **chunk by chunk**: each chunk's tokens merge among themselves into
`merged_length(n)` tokens that stay between the frames they lie between, so the placeholder counts are known before
the encoder runs and the processor can emit them. Its merged tokens get the same time-aligned positions (the mean of
their members, which all lie in one chunk). A clip counts as arriving with video when its `<|audio_bos|>` is followed
by a video token, as upstream lays such clips out; clips on their own are merged whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    PretrainedConfig,
    Qwen2_5OmniConfig,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
)
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
    Qwen2_5OmniPreTrainedModelForConditionalGeneration,
)
from transformers.utils import is_torchvision_available
from transformers.video_processing_utils import BaseVideoProcessor

from .. import compat
from ..compat import mirrors
from ..config import AudioTokenMergeConfig, MergeSetting
from ..merging import MergeResult
from ..models.compaction import expanded_order
from ..models.encoder_probe import capture_last_layer_projections, encoder_keys, received_attention
from ..models.mixin import (
    _UNSET,
    AudioTokenMergeGenerationMixin,
    AudioTokenMergeModelMixin,
    AudioTokenMergeOutput,
    _init_setting,
    _SettingAccess,
    encoder_output_options,
)
from ..models.units import MergedUnits, MergeInputs, member_positions, merge_units
from ..processing import MergeSettingProcessorMixin
from .base import Backbone, register_backbone

__all__ = [
    "Qwen2_5OmniBackbone",
    "Qwen2_5OmniThinkerLTBMForConditionalGeneration",
    "Qwen2_5OmniThinkerLTBMModel",
    "Qwen2_5OmniThinkerLTBMProcessor",
    "chunk_sizes",
    "expand_placeholder_runs",
    "merge_packed_clips",
    "merged_chunk_runs",
    "merged_token_positions",
    "rounded_time",
    "split_into_pieces",
]

_STASHED_GRIDS = "hf_ltbm_grids"
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")


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


def _item_rows(placeholder: torch.Tensor, grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """`[K]`: the batch row of each image or video (`grid_thw [K, 3]`, in prompt order), from where their tokens sit
    (`placeholder [B, L]`, `prod(grid) / merge_size**2` tokens each)."""
    tokens = grid_thw.prod(-1) // merge_size**2
    starts = (tokens.cumsum(0) - tokens).to(placeholder.device)
    return torch.searchsorted(placeholder.sum(1).cumsum(0), starts, right=True)


_ThinkerModel = compat.qwen2_5_omni_thinker_model()


class _ThinkerMergingMixin:
    """The thinker's merging base-model methods (in front of `AudioTokenMergeModelMixin`): the packed audio encoder,
    images and videos, and time-aligned positions (module docstring). On transformers 5.20 and later they make
    `Qwen2_5OmniThinkerLTBMModel`; on 5.19, whose thinker is one flat class, the head holds them."""

    _audio_mask_name = "feature_attention_mask"
    _merging_parameters = AudioTokenMergeModelMixin._merging_parameters | {
        "pixel_values",
        "pixel_values_videos",
        "image_grid_thw",
        "video_grid_thw",
        "use_audio_in_video",
        "video_second_per_grid",
        "mm_encoder_outputs",
    }

    # -------------------------------------------------------------------------------------------------- audio
    def _check_audio_inputs(self, input_features: torch.Tensor, feature_mask: torch.Tensor) -> None:
        """`input_features [U, num_mel_bins, frames]` and `feature_attention_mask [U, frames]` (any padded length:
        the encoder reads the valid frames only)."""
        bins, frames = self.config.audio_config.num_mel_bins, input_features.shape[-1]
        if input_features.dim() != 3 or input_features.shape[1] != bins:
            raise ValueError(
                f"`input_features` must have shape [units, num_mel_bins, frames] = [U, {bins}, {frames}] (any number "
                f"of frames), got {tuple(input_features.shape)}."
            )
        if tuple(feature_mask.shape) != (input_features.shape[0], frames):
            raise ValueError(
                f"`{self._audio_mask_name}` must have shape [units, frames] = [{input_features.shape[0]}, {frames}] "
                f"(one row per row of `input_features`), got {tuple(feature_mask.shape)}."
            )

    def _merged_audio_features(
        self,
        input_features: torch.Tensor,
        feature_mask: torch.Tensor,
        before_projection: Any = None,
        pieces: Optional[list[list[int]]] = None,
        **kwargs: Any,
    ) -> AudioTokenMergeOutput:
        """Runs upstream's encoder (with `output_attentions` / `output_hidden_states` from `kwargs`) and merges each
        clip (or each of its `pieces`, tokens per piece per clip, `_clip_pieces`) with `merge_packed_clips`. The
        output's counts and merge result are per merged piece. As upstream's encoder output, `last_hidden_state`
        holds the projected tokens packed over the clips, `[sum(M_c), hidden_size]` (and so does `pooler_output`)."""
        tower = self.audio_tower
        mel_lengths = feature_mask.sum(-1).long()
        features = input_features.permute(0, 2, 1)[feature_mask.bool()].permute(1, 0)
        encoded: list[Any] = []
        options = encoder_output_options(kwargs)
        _, num_input, merged = merge_packed_clips(
            tower,
            lambda frames: encoded.append(
                tower(features, feature_lens=mel_lengths, aftercnn_lens=frames, return_dict=True, **options)
            ),
            mel_lengths,
            [self.audio_token_merge] * len(mel_lengths),
            pieces,
        )
        return AudioTokenMergeOutput(
            last_hidden_state=merged.tokens,
            pooler_output=merged.tokens,
            hidden_states=encoded[0].hidden_states,
            attentions=encoded[0].attentions,
            audio_token_counts=merged.counts.to(num_input.device),
            num_input_tokens=num_input,
            merge_result=merged.result,
        )

    @compat.can_return_tuple
    def get_audio_features(
        self,
        input_features: torch.Tensor,
        feature_attention_mask: Optional[torch.Tensor] = None,
        audio_feature_lengths: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ):
        """Upstream `get_audio_features` when merging is off; otherwise encodes each clip, merges it and projects it.

        Args:
            input_features (`torch.FloatTensor` of shape `[num_clips, num_mel_bins, frames]`): log-mel features.
            feature_attention_mask (`torch.LongTensor` of shape `[num_clips, frames]`): valid mel frames per clip.

        Returns:
            Merging on: `AudioTokenMergeOutput` with `pooler_output [sum(M_c), hidden_size]` (clips concatenated),
            `audio_token_counts [num_clips]` (`M_c`) and `num_input_tokens [num_clips]` (`N_c`).
        """
        if self.audio_token_merge is None:
            return self._upstream_class.get_audio_features(
                self, input_features, feature_attention_mask, audio_feature_lengths, **kwargs
            )
        if feature_attention_mask is None:
            raise ValueError("Merging needs `feature_attention_mask` (the processor's), not `audio_feature_lengths`.")
        return self._merged_audio_features(input_features, feature_attention_mask, **kwargs)

    # ----------------------------------------------------------------------------------------- audio in video
    def _audio_in_video(self, input_ids: Optional[torch.Tensor]) -> list[bool]:
        """For each `<|audio_bos|>` of `input_ids [B, L]` in order (one per clip, as upstream's `get_rope_index`
        counts clips): whether a video token follows it, i.e. the clip arrives interleaved with a video."""
        if input_ids is None:
            return []
        follows = torch.zeros_like(input_ids, dtype=torch.bool)
        follows[:, :-1] = input_ids[:, 1:] == self.config.video_token_id
        return follows[input_ids == self.config.audio_start_token_id].tolist()

    def _clip_pieces(self, num_input: torch.Tensor, input_ids: Optional[torch.Tensor]) -> list[list[int]]:
        """Tokens per merged piece of each clip (`num_input [num_clips]` tokens each): the whole clip, or for a clip
        interleaved with a video one piece per `position_id_per_seconds * seconds_per_chunk` tokens (the last may be
        shorter), the chunks upstream interleaves with the video's frames (module docstring)."""
        sizes = num_input.tolist()
        in_video = self._audio_in_video(input_ids)
        if not any(in_video):
            return [[n] for n in sizes]
        if len(in_video) != len(sizes):
            raise ValueError(
                f"The prompt holds {len(in_video)} `<|audio_bos|>` tokens, some of them audio interleaved with video, "
                f"but {len(sizes)} audio clips: with audio in video, every clip needs its own `<|audio_bos|>` (as "
                "the processor writes them) to tell which clips are interleaved."
            )
        chunk = int(self.config.position_id_per_seconds * self.config.seconds_per_chunk)
        return [chunk_sizes(n, chunk) if video else [n] for n, video in zip(sizes, in_video)]

    def audio_token_counts(
        self, feature_mask: torch.Tensor, input_ids: Optional[torch.Tensor] = None
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        """`(N_c, M_c)`: audio tokens per clip before and after merging, without running the encoder. With the
        prompt's `input_ids`, a clip interleaved with a video counts the sum of its chunks' merged lengths."""
        num_input, num_output = super().audio_token_counts(feature_mask)
        setting = self.audio_token_merge
        if setting is None or input_ids is None:
            return num_input, num_output
        merged = [sum(setting.output_length(n) for n in clip) for clip in self._clip_pieces(num_input, input_ids)]
        return num_input, torch.tensor(merged, dtype=torch.long, device=num_input.device)

    def _merge_unit_counts(
        self, feature_mask: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        """`(N, M)` per merged piece (`_clip_pieces`), in prompt order."""
        num_input = self._audio_unit_lengths(feature_mask)
        sizes = [n for clip in self._clip_pieces(num_input, input_ids) for n in clip]
        merged = [self.audio_token_merge.output_length(n) for n in sizes]
        return (
            torch.tensor(sizes, dtype=torch.long, device=num_input.device),
            torch.tensor(merged, dtype=torch.long, device=num_input.device),
        )

    def _prompt_audio_features(
        self, input_features: torch.Tensor, feature_mask: torch.Tensor, input_ids: torch.Tensor, plan: Any
    ) -> AudioTokenMergeOutput:
        """The clips of the prompt merged in their pieces (`_clip_pieces`)."""
        pieces = self._clip_pieces(self._audio_unit_lengths(feature_mask), input_ids)
        return self._merged_audio_features(input_features, feature_mask, pieces=pieces)

    # ---------------------------------------------------------------------------------------------- positions
    def _language_model_positions(
        self,
        input_ids: Optional[torch.Tensor],
        attention_mask: Optional[torch.Tensor],
        inputs_embeds: torch.Tensor,
        audio: Optional[AudioTokenMergeOutput],
        plan: Any,
        kv_cache: Any,
        **position_inputs: Any,
    ) -> Optional[torch.Tensor]:
        """Upstream's 3D positions `[3, B, L]` for the unmerged prompt, with each merged token at the rounded mean
        position of its members (module docstring); in a step without audio (decoding), upstream's positions."""
        grids = {key: position_inputs.get(key) for key in ("image_grid_thw", "video_grid_thw")}
        seconds = position_inputs.get("video_second_per_grid")
        in_video = bool(position_inputs.get("use_audio_in_video"))
        decoding = (
            attention_mask is not None
            and attention_mask.ndim == 2
            and attention_mask.shape[-1] > inputs_embeds.shape[1]
        )
        if audio is None and decoding and self.rope_deltas is not None:
            # a decoding step after the prefill set `rope_deltas`: upstream's positions for it (the mask's count of
            # tokens so far plus the delta), decided by shapes alone, so that a compiled step has no data-dependent
            # branch (upstream's `compute_3d_position_ids` branches on the cache's length)
            positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
            rows = inputs_embeds.shape[0]
            delta = self.rope_deltas.repeat_interleave(rows // self.rope_deltas.shape[0], dim=0)
            positions = positions[None].expand(3, -1, -1) + delta.to(positions.device)
            return positions[..., -inputs_embeds.shape[1] :]
        if audio is None or input_ids is None:
            # without input_ids (a prompt given as `inputs_embeds`), upstream's rule: positions continue from
            # `rope_deltas` where it has them, else the language model numbers them
            cache = {compat.cache_parameter(self.compute_3d_position_ids): kv_cache}
            positions = self.compute_3d_position_ids(
                input_ids=input_ids,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                use_audio_in_video=in_video,
                audio_feature_lengths=None,
                video_second_per_grid=seconds,
                **grids,
                **cache,
            )
            # while decoding, upstream numbers every position of the attention mask: keep the new tokens'
            return None if positions is None else positions[..., -inputs_embeds.shape[1] :]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        num_input, num_output = audio.num_input_tokens, audio.audio_token_counts
        placeholder = input_ids == self.config.audio_token_id
        in_prompt = num_input if plan.compacts else num_output
        full_ids, full_mask, index = expand_placeholder_runs(
            input_ids, attention_mask, placeholder, in_prompt, num_input
        )
        full, _ = self.get_rope_index(
            full_ids,
            grids["image_grid_thw"],
            grids["video_grid_thw"],
            full_mask,
            in_video,
            position_inputs.get("audio_seqlens"),
            seconds,
        )
        positions = full.gather(2, index.to(full.device)[None].expand(3, -1, -1))
        # each unit's first placeholder in the prompt, and the position of its first frame
        rows, cols = placeholder.nonzero(as_tuple=True)
        firsts = (in_prompt.cumsum(0) - in_prompt).to(rows.device)
        has_tokens = (num_input > 0).to(rows.device)
        first_rows, first_cols = rows[firsts[has_tokens]], cols[firsts[has_tokens]]
        starts = positions[0, first_rows, first_cols]  # audio positions are equal on all three axes
        merged = merged_token_positions(starts, audio.merge_result)
        valid = torch.arange(merged.shape[1], device=merged.device)[None] < audio.merge_result.lengths[:, None].to(
            merged.device
        )
        positions[:, plan.fill.to(positions.device)] = merged[valid].to(positions.device)[None].expand(3, -1)
        return positions

    def _merging_forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        pixel_values_videos: Optional[torch.Tensor] = None,
        image_grid_thw: Optional[torch.LongTensor] = None,
        video_grid_thw: Optional[torch.LongTensor] = None,
        use_audio_in_video: Optional[bool] = None,
        video_second_per_grid: Optional[torch.Tensor] = None,
        mm_encoder_outputs: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ):
        """Images and videos are embedded by upstream's encoders (or taken from `mm_encoder_outputs`) into their
        placeholders; audio is merged (a clip interleaved with a video chunk by chunk), and the positions are
        time-aligned (`_language_model_positions`). Sets `rope_deltas` for decoding."""
        feature_mask = kwargs.get(self._audio_mask_name)
        with_audio = feature_mask is not None and kwargs.get("input_features") is not None  # not a decoding step
        if not use_audio_in_video and with_audio and any(self._audio_in_video(input_ids)):
            raise ValueError(
                "The prompt holds audio interleaved with video (an `<|audio_bos|>` followed by video tokens, as the "
                "processor writes audio loaded from a video) but `use_audio_in_video` is not set: pass "
                "`use_audio_in_video=True` to the model or `generate`, as upstream needs for its positions."
            )
        # grids that `generate` set aside before it encoded the images (`_prepare_position_ids_for_generation`)
        stashed = kwargs.pop(_STASHED_GRIDS, None) or {}
        image_grid_thw = stashed.get("image_grid_thw") if image_grid_thw is None else image_grid_thw
        video_grid_thw = stashed.get("video_grid_thw") if video_grid_thw is None else video_grid_thw
        if mm_encoder_outputs is not None and (pixel_values is not None or pixel_values_videos is not None):
            raise ValueError(  # as upstream
                "You cannot specify both pixel_values/pixel_values_videos and mm_encoder_outputs at the same time"
            )
        encoded = dict(mm_encoder_outputs or {})  # a copy: the encoders' outputs of this call are added to it
        if (
            inputs_embeds is None
            and input_ids is not None
            and (encoded or pixel_values is not None or pixel_values_videos is not None)
        ):
            inputs_embeds = self.get_input_embeddings()(input_ids)  # without images the mixin embeds after its checks
        options = encoder_output_options(kwargs)
        for modality, pixels, grid, get, token_id in (
            ("image", pixel_values, image_grid_thw, self.get_image_features, self.config.image_token_id),
            ("video", pixel_values_videos, video_grid_thw, self.get_video_features, self.config.video_token_id),
        ):
            output = encoded.get(modality)
            if output is None and pixels is not None:
                output = encoded[modality] = get(pixels, grid, return_dict=True, **options)
            if output is not None:
                embeds = output.pooler_output
                embeds = torch.cat(embeds) if isinstance(embeds, (list, tuple)) else embeds
                # from input_ids, or without them from inputs_embeds (as upstream's `get_placeholder_mask`)
                mask = self._token_mask(token_id, input_ids, inputs_embeds)[..., None].to(inputs_embeds.device)
                inputs_embeds = inputs_embeds.masked_scatter(
                    mask, embeds.to(inputs_embeds.device, inputs_embeds.dtype)
                )
        position_inputs = {
            "image_grid_thw": image_grid_thw,
            "video_grid_thw": video_grid_thw,
            "video_second_per_grid": video_second_per_grid,
            "audio_seqlens": None if feature_mask is None else feature_mask.sum(-1),
            "use_audio_in_video": use_audio_in_video,
        }
        outputs = super()._merging_forward(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            position_inputs=position_inputs,
            output_fields={"image_outputs": encoded.get("image"), "video_outputs": encoded.get("video")},
            **kwargs,
        )
        if outputs.audio_token_counts is not None and outputs.position_ids is not None:
            mask = outputs.attention_mask
            if mask is None:
                mask = torch.ones(outputs.position_ids.shape[1:], dtype=torch.long, device=outputs.position_ids.device)
            last = outputs.position_ids.masked_fill(mask[None] == 0, -1).amax(dim=(0, 2))
            self.rope_deltas = (last + 1 - mask.sum(-1)).unsqueeze(1)
        if "rope_deltas" in self._model_output_fields and self.rope_deltas is not None:
            outputs["rope_deltas"] = self.rope_deltas  # as upstream's output on releases that carry it (5.19)
        return outputs

    def _audio_placeholder_mask(
        self, input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor]
    ) -> Optional[torch.Tensor]:
        """Upstream's rule for the thinker (`get_placeholder_mask`): the placeholders of a prompt given as
        `inputs_embeds` alone are where a position equals the placeholder's embedding."""
        return self._token_mask(self.config.audio_token_id, input_ids, inputs_embeds)

    def _placeholder_name(self) -> str:
        return "<|AUDIO|>"


class _ThinkerGenerationMixin:
    """The thinker head's merging pieces (in front of `AudioTokenMergeGenerationMixin`): positions are computed at
    the prefill of a prompt with audio, from the 2D mask, and continued from `rope_deltas`."""

    _upstream_class = Qwen2_5OmniThinkerForConditionalGeneration
    _pretrained_base = Qwen2_5OmniPreTrainedModelForConditionalGeneration
    _audio_mask_name = "feature_attention_mask"
    _merging_parameters = AudioTokenMergeGenerationMixin._merging_parameters | _ThinkerMergingMixin._merging_parameters

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any):
        """`PreTrainedModel.from_pretrained` of a thinker folder, or of a whole Qwen2.5-Omni checkpoint
        (`Qwen/Qwen2.5-Omni-7B`, model type `qwen2_5_omni`): its `thinker_config` and its `thinker.*` weights (the
        talker and the vocoder are not loaded). `audio_token_merge=` as for every merging model."""
        if kwargs.get("config") is None and not args:
            hub = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
            config_dict, _ = PretrainedConfig.get_config_dict(pretrained_model_name_or_path, **hub)
            if config_dict.get("model_type") == Qwen2_5OmniConfig.model_type:
                kwargs["config"] = Qwen2_5OmniConfig.from_dict(config_dict).thinker_config
                kwargs["key_mapping"] = {r"^thinker\.": "", **(kwargs.get("key_mapping") or {})}
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _prepare_position_ids_for_generation(self, inputs_tensor: torch.Tensor, model_kwargs: dict[str, Any]):
        """Upstream's 3D positions, except for a prompt with audio given as `input_ids` while merging: a merged
        token's position depends on the merge, so the prefill computes the positions (and `rope_deltas` for the tokens
        after it). A prompt given as `inputs_embeds` alone gets upstream's, which cannot be time-aligned either."""
        ids = model_kwargs.get("input_ids")
        ids = ids if ids is not None and ids.shape[-1] > 0 else inputs_tensor
        from_ids = ids.dim() == 2 and not ids.is_floating_point()
        if self.audio_token_merge is None or model_kwargs.get("input_features") is None or not from_ids:
            return super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)
        # `generate` encodes images and videos next and drops their grids, which the prefill's positions need
        grids = {key: model_kwargs[key] for key in ("image_grid_thw", "video_grid_thw") if key in model_kwargs}
        if grids:
            model_kwargs[_STASHED_GRIDS] = grids
        self._merge_model.rope_deltas = None
        return None

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        """Upstream's expansion for beam search / `num_return_sequences` (and the audio's, as for every backbone);
        while merging, the image and video grids set aside for the prefill's positions and `video_second_per_grid`
        (one entry per image / video) are repeated with the row they belong to."""
        stashed = model_kwargs.pop(_STASHED_GRIDS, None)
        seconds = model_kwargs.pop("video_second_per_grid", None) if stashed is not None else None
        before = input_ids
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size, is_encoder_decoder=is_encoder_decoder, input_ids=input_ids, **model_kwargs
        )
        if stashed is None:
            return input_ids, model_kwargs
        if expand_size > 1 and before is not None:
            merge = self.config.vision_config.spatial_merge_size
            orders = {
                key: expanded_order(_item_rows(before == token_id, stashed[key], merge), len(before), expand_size)
                for key, token_id in (
                    ("image_grid_thw", self.config.image_token_id),
                    ("video_grid_thw", self.config.video_token_id),
                )
                if stashed.get(key) is not None
            }
            stashed = {key: grid[orders[key].to(grid.device)] for key, grid in stashed.items() if grid is not None}
            if seconds is not None and "video_grid_thw" in orders:
                seconds = seconds[orders["video_grid_thw"].to(seconds.device)]
        model_kwargs[_STASHED_GRIDS] = stashed
        if seconds is not None:
            model_kwargs["video_second_per_grid"] = seconds
        return input_ids, model_kwargs

    def _needs_2d_mask(
        self,
        first: bool,
        input_ids: Optional[torch.Tensor],
        feature_mask: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor] = None,
    ) -> bool:
        """Every step of a prompt with audio while merging: the positions come from the 2D mask (and `rope_deltas`),
        not from `generate`'s position ids."""
        return self.audio_token_merge is not None and feature_mask is not None

    @mirrors(Qwen2_5OmniThinkerForConditionalGeneration.forward)
    def forward(self, *args: Any, **kwargs: Any):
        """Upstream forward (same signature) when merging is off; with merging, the loss is computed on the compacted
        labels and the output (`AudioTokenMergeCausalLMOutput`) describes the sequence the KV cache holds."""
        return self._dispatch_forward(super().forward, args, kwargs)


if _ThinkerModel is not None:

    class Qwen2_5OmniThinkerLTBMModel(_ThinkerMergingMixin, AudioTokenMergeModelMixin, _ThinkerModel):
        """`Qwen2_5OmniThinkerModel` whose language model runs on merged audio tokens (one merge per clip), each at
        the mean time of the frames it stands for (module docstring). Images and videos go through upstream's
        encoders. Accepts an extra `audio_token_merge` argument, stored in `config.audio_token_merge`."""

        _upstream_class = _ThinkerModel

        @mirrors(_ThinkerModel.forward)
        def forward(self, *args: Any, **kwargs: Any):
            """Upstream `Qwen2_5OmniThinkerModel.forward` (same signature) when merging is off; otherwise the merged
            audio tokens replace the placeholders at time-aligned positions and a prompt with the unmerged count is
            compacted."""
            return self._dispatch_forward(super().forward, args, kwargs)

    class Qwen2_5OmniThinkerLTBMForConditionalGeneration(
        _ThinkerGenerationMixin, AudioTokenMergeGenerationMixin, Qwen2_5OmniThinkerForConditionalGeneration
    ):
        """`Qwen2_5OmniThinkerForConditionalGeneration` whose language model runs on merged audio tokens (one merge
        per clip) at time-aligned positions. Works with prompts from the merging processor and from the stock
        processor (compacted at prefill). With no merge setting it is the upstream class."""

        _model_class = Qwen2_5OmniThinkerLTBMModel

        def __init__(self, config: Qwen2_5OmniThinkerConfig, **kwargs: Any) -> None:
            super().__init__(config, **kwargs)
            # the attributes upstream's __init__ sets besides its modules
            self.vocab_size = config.text_config.vocab_size
            self.spatial_merge_size = config.vision_config.spatial_merge_size

else:  # transformers 5.19: one flat thinker class (audio_tower, visual, model = the language model, lm_head)
    Qwen2_5OmniThinkerLTBMModel = None

    class Qwen2_5OmniThinkerLTBMForConditionalGeneration(
        _ThinkerGenerationMixin,
        _ThinkerMergingMixin,
        AudioTokenMergeModelMixin,
        AudioTokenMergeGenerationMixin,
        Qwen2_5OmniThinkerForConditionalGeneration,
    ):
        """`Qwen2_5OmniThinkerForConditionalGeneration` whose language model runs on merged audio tokens (one merge
        per clip) at time-aligned positions. Works with prompts from the merging processor and from the stock
        processor (compacted at prefill). With no merge setting it is the upstream class. On this transformers
        release the thinker is one class: the head itself holds the merging base-model methods."""

        _model_class = None
        _merging_forward = AudioTokenMergeGenerationMixin._merging_forward  # the head's: LM head and loss
        set_audio_token_merge = _SettingAccess.set_audio_token_merge

        def __init__(self, config: Qwen2_5OmniThinkerConfig, audio_token_merge: MergeSetting = _UNSET) -> None:
            _init_setting(config, audio_token_merge)
            Qwen2_5OmniThinkerForConditionalGeneration.__init__(self, config)
            self._validate_audio_token_merge(self.audio_token_merge)
            self._sync_attention()

        @property
        def language_model(self) -> Any:
            """The language model (upstream's `model` on this release)."""
            return self.model

        @property
        def _merge_model(self) -> Any:
            return self

        def _model_merging_forward(self, **kwargs: Any):
            return _ThinkerMergingMixin._merging_forward(self, **kwargs)


class Qwen2_5OmniThinkerLTBMProcessor(MergeSettingProcessorMixin, Qwen2_5OmniProcessor):
    """`Qwen2_5OmniProcessor` that emits `output_length(N)` `<|AUDIO|>` placeholders per clip. Features are the
    upstream ones; with a merge setting only `input_ids` / `attention_mask` are shorter. Audio longer than the feature
    extractor's window raises instead of being truncated.

    Without torchvision (which Qwen2.5-Omni's video processor needs) a `BaseVideoProcessor` may stand in for the video
    processor: audio and images need none.

    Args:
        image_processor, video_processor, feature_extractor, tokenizer, chat_template: as for `Qwen2_5OmniProcessor`.
        audio_token_merge (`str`, `dict` or `AudioTokenMergeConfig`, *optional*): the model's merge setting.
    """

    _upstream_class = Qwen2_5OmniProcessor

    def __init__(
        self,
        image_processor=None,
        video_processor=None,
        feature_extractor=None,
        tokenizer=None,
        chat_template=None,
        audio_token_merge: MergeSetting = None,
    ):
        self._init_setting(audio_token_merge)
        super().__init__(image_processor, video_processor, feature_extractor, tokenizer, chat_template=chat_template)

    def check_argument_for_proper_class(self, argument_name: str, argument: Any):
        """Upstream's check, except that without torchvision (where transformers cannot resolve the video processor's
        base class) a `BaseVideoProcessor` is accepted as the video processor."""
        if argument_name == "video_processor" and not is_torchvision_available():
            if isinstance(argument, BaseVideoProcessor):
                return type(argument)
        return super().check_argument_for_proper_class(argument_name, argument)

    def _check_lengths(self, audio: Any) -> None:
        clips = audio if isinstance(audio, (list, tuple)) else [audio]
        self.check_audio_lengths([np.asarray(clip).shape[-1] for clip in clips], self.feature_extractor.sampling_rate)

    if compat.defines(Qwen2_5OmniProcessor, "_process_audio"):  # 5.20 and later: loaded audio is featurised here

        def _process_audio(self, audio, **kwargs):
            self._check_lengths(audio)
            return super()._process_audio(audio, **kwargs)

    else:  # 5.19: the arrays go to the feature extractor inside __call__

        @mirrors(Qwen2_5OmniProcessor.__call__)
        def __call__(self, *args: Any, **kwargs: Any):
            """Upstream `__call__` (same signature); audio longer than the feature extractor's window raises."""
            audio = compat.signature(Qwen2_5OmniProcessor.__call__).bind(self, *args, **kwargs).arguments.get("audio")
            if audio is not None:
                self._check_lengths(audio)
            return super().__call__(*args, **kwargs)

        @mirrors(Qwen2_5OmniProcessor.replace_multimodal_special_tokens)
        def replace_multimodal_special_tokens(self, *args: Any, **kwargs: Any):
            """Upstream's expansion (same signature) with `merged_length(N)` placeholders per clip, and for audio
            that arrives with video `merged_length(n)` per chunk of `n` (module docstring)."""
            call = compat.signature(Qwen2_5OmniProcessor.replace_multimodal_special_tokens).bind(self, *args, **kwargs)
            arguments = call.arguments
            if self.merge_config is None:
                return Qwen2_5OmniProcessor.replace_multimodal_special_tokens(*call.args, **call.kwargs)
            in_video = bool(arguments.get("use_audio_in_video"))
            # upstream takes the clip lengths in the order their tokens appear: an audio token's clip is merged
            # whole; with audio in video a video token's clip is interleaved first and merged per chunk below
            pattern = f"{re.escape(self.audio_token)}|{re.escape(self.video_token)}"
            takers = [match.group() for sample in arguments["text"] for match in re.finditer(pattern, sample)]
            takers = [token for token in takers if token == self.audio_token or in_video]
            lengths = [int(n) for n in arguments["audio_lengths"]]
            arguments["audio_lengths"] = iter(
                [self.merged_length(n) if token == self.audio_token else n for n, token in zip(lengths, takers)]
                + lengths[len(takers) :]
            )
            text = Qwen2_5OmniProcessor.replace_multimodal_special_tokens(*call.args, **call.kwargs)
            if not in_video:
                return text
            block = re.compile(
                f"{re.escape(self.vision_bos_token + self.audio_bos_token)}.*?"
                f"{re.escape(self.audio_eos_token + self.vision_eos_token)}",
                flags=re.DOTALL,
            )
            chunk = int(arguments["position_id_per_seconds"] * arguments["seconds_per_chunk"])
            return [block.sub(lambda match: self._merge_chunks(match.group(), chunk), sample) for sample in text]

    def _duration_limit(self) -> tuple[str, str]:
        return "Qwen2.5-Omni's feature extractor", "Cut it into clips of at most that length, each with its own audio."

    def replace_audio_token(self, audio_inputs: dict, audio_idx: int, **kwargs) -> str:
        """The placeholder run for clip `audio_idx`: `merged_length(N)` audio tokens, where `N` is its entry of
        `audio_inputs["num_audio_tokens"]` (`[num_clips]`, the unmerged counts)."""
        return self.audio_token * self.merged_length(int(audio_inputs["num_audio_tokens"][audio_idx]))

    def replace_video_with_audio_token(self, *args: Any, **kwargs: Any) -> str:
        """Upstream's run of a video with its audio, interleaved per `seconds_per_chunk`; with a merge setting each
        audio chunk of `n` placeholders holds `merged_length(n)` (module docstring)."""
        run = super().replace_video_with_audio_token(*args, **kwargs)
        if self.merge_config is None:
            return run
        return self._merge_chunks(run, int(kwargs["position_id_per_seconds"] * kwargs["seconds_per_chunk"]))

    def _merge_chunks(self, run: str, chunk: int) -> str:
        """`run`, one video interleaved with its audio, with each audio chunk of `n` placeholders (`chunk` tokens,
        the last one fewer; past the video's end they follow one another) cut to `merged_length(n)`."""
        token = self.audio_token
        pattern = re.compile(f"(?:{re.escape(token)})+")
        lengths = [len(match) // len(token) for match in pattern.findall(run)]
        merged = iter(merged_chunk_runs(lengths, chunk, self.merged_length))
        return pattern.sub(lambda _: token * next(merged), run)


_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif part['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)
_TINY_NAMED_TOKENS = {
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}


@register_backbone
class Qwen2_5OmniBackbone(Backbone):
    """Qwen2.5-Omni's thinker (`Qwen/Qwen2.5-Omni-7B`, text output): one unit per clip, 25 tokens per second."""

    model_type = "qwen2_5_omni_thinker"
    display_name = "Qwen2.5-Omni"
    config_class = Qwen2_5OmniThinkerConfig
    upstream_processor = Qwen2_5OmniProcessor
    base_model = Qwen2_5OmniThinkerLTBMModel
    generation_model = Qwen2_5OmniThinkerLTBMForConditionalGeneration
    processor = Qwen2_5OmniThinkerLTBMProcessor
    extra_auto_classes = ("AutoModelForImageTextToText",)
    checkpoint_model_types = ("qwen2_5_omni",)
    tiny_name = "tiny-random-qwen2-5-omni"
    tiny_encoder_type = "qwen2_5_omni_audio_encoder"
    tiny_audio_tokens = tuple(_TINY_NAMED_TOKENS.values())
    tiny_chat_template = _TINY_CHAT_TEMPLATE

    def plain_prompt_audio(self, processor: Any) -> str:
        """`<|audio_bos|><|AUDIO|><|audio_eos|>`: the processor expands the placeholder only."""
        return processor.audio_bos_token + processor.audio_token + processor.audio_eos_token

    def tiny_processor(self, audio_token_merge: Any) -> Any:
        """Whisper features (16 kHz, 128 mel bins, 30 s), Qwen2-VL's image processor (the PIL one where transformers
        has it), a `BaseVideoProcessor` stand-in and the tiny tokenizer with Qwen2.5-Omni's named special tokens."""
        import transformers
        from transformers import WhisperFeatureExtractor

        from ..tiny import tiny_tokenizer

        features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=30)
        images = (getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor)()
        videos = BaseVideoProcessor(merge_size=2, temporal_patch_size=2)
        tokenizer = tiny_tokenizer(list(self.tiny_audio_tokens), named=_TINY_NAMED_TOKENS)
        return self.processor(
            images,
            videos,
            features,
            tokenizer,
            chat_template=self.tiny_chat_template,
            audio_token_merge=audio_token_merge,
        )

    def tiny_config(self, processor: Any) -> Any:
        """The thinker with tiny widths: Qwen2.5-Omni's audio encoder (2 s attention chunks), a one-block vision
        encoder and a two-layer language model whose rotary sections cover its head size."""
        from ..tiny import tiny_audio_config, tiny_text_config

        tokenizer = processor.tokenizer
        audio = tiny_audio_config(self.tiny_encoder_type)
        audio.update(n_window=100, output_dim=64)
        text = tiny_text_config(tokenizer)
        text.update(model_type="qwen2_5_omni_text", rope_scaling={"rope_type": "default", "mrope_section": [4, 6, 6]})
        ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _TINY_NAMED_TOKENS.items()}
        config = self.config_class(
            audio_config=audio,
            vision_config=dict(
                depth=1,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=64,
                fullatt_block_indexes=[0],
            ),
            text_config=text,
            audio_token_index=ids["audio_token"],
            image_token_index=ids["image_token"],
            video_token_index=ids["video_token"],
            audio_start_token_id=ids["audio_bos_token"],
            audio_end_token_id=ids["audio_eos_token"],
        )
        config.vision_start_token_id = ids["vision_bos_token"]  # read by get_rope_index, not a declared field
        return config
