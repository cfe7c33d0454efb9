"""Qwen2.5-Omni's thinker whose language model runs on merged audio tokens at time-aligned positions (see the
package docstring): the merging mixins and, on transformers 5.20 and later, the classes over the thinker's
`Qwen2_5OmniThinkerModel` (5.19's flat thinker: `legacy.py`)."""

from __future__ import annotations

from typing import Any, Optional

import torch
import transformers
from transformers import (
    PretrainedConfig,
    Qwen2_5OmniConfig,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
)
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
    Qwen2_5OmniPreTrainedModelForConditionalGeneration,
)

from ... import compat
from ...compat import mirrors
from ...models.compaction import expanded_order
from ...models.generation import AudioTokenMergeGenerationMixin
from ...models.model import AudioTokenMergeModelMixin
from ...models.outputs import AudioTokenMergeOutput, encoder_output_options
from . import THINKER_MODEL, has_thinker_model
from .positions import chunk_sizes, expand_placeholder_runs, item_rows, merge_packed_clips, merged_token_positions

_STASHED_GRIDS = "hf_ltbm_grids"
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")

#: transformers' `Qwen2_5OmniThinkerModel` (5.20 and later: the thinker's encoders and language model, under a head),
#: or `None` on a release whose thinker is one flat class (5.19: `legacy.py`), as `has_thinker_model` tells.
_ThinkerModel = getattr(transformers, THINKER_MODEL) if has_thinker_model() else None


class ThinkerMergingMixin:
    """The thinker's merging base-model methods (in front of `AudioTokenMergeModelMixin`): the packed audio encoder,
    images and videos, and time-aligned positions (module docstring). On transformers 5.20 and later they make
    `Qwen2_5OmniThinkerLTBMModel`; on 5.19, whose thinker is one flat class, the head holds them."""

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
    def _unit_frames(self) -> Optional[int]:
        """Any padded length: the packed encoder reads the valid frames only."""
        return None

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


class ThinkerGenerationMixin:
    """The thinker head's merging pieces (in front of `AudioTokenMergeGenerationMixin`): positions are computed at
    the prefill of a prompt with audio, from the 2D mask, and continued from `rope_deltas`."""

    _upstream_class = Qwen2_5OmniThinkerForConditionalGeneration
    _pretrained_base = Qwen2_5OmniPreTrainedModelForConditionalGeneration
    _merging_parameters = AudioTokenMergeGenerationMixin._merging_parameters | ThinkerMergingMixin._merging_parameters

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
                key: expanded_order(item_rows(before == token_id, stashed[key], merge), len(before), expand_size)
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

    class Qwen2_5OmniThinkerLTBMModel(ThinkerMergingMixin, AudioTokenMergeModelMixin, _ThinkerModel):
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
        ThinkerGenerationMixin, AudioTokenMergeGenerationMixin, Qwen2_5OmniThinkerForConditionalGeneration
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
