"""Voxtral served by vLLM with merged audio tokens (one merge per 30 s chunk, 375 tokens each, summed per clip).

vLLM reads Voxtral in Mistral's format only (`params.json`, `consolidated.safetensors`, `tekken.json`) and needs
`tokenizer_mode="mistral"`; the prompt arrives tokenised by mistral-common with 375 `[AUDIO]` per chunk, and the
processor shortens each clip's run to `M` (`TokenisedRunsMixin`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

import torch
from vllm.model_executor.models.voxtral import (
    VoxtralDummyInputsBuilder,
    VoxtralForConditionalGeneration,
    VoxtralMultiModalProcessor,
    VoxtralProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...config import AudioTokenMergeConfig
from ...models.units import capture_merge_inputs, merge_inputs_at_token_rate, merge_units, per_item, per_unit
from .processing import MergingModelMixin, MergingProcessingInfoMixin, MergingProcessorMixin, TokenisedRunsMixin

__all__ = ["VoxtralLTBMForConditionalGeneration", "VoxtralLTBMMultiModalProcessor"]


class VoxtralLTBMProcessingInfo(MergingProcessingInfoMixin, VoxtralProcessingInfo):
    """vLLM's `VoxtralProcessingInfo` composed with the mixin (the registered processor needs an info class)."""


class VoxtralLTBMMultiModalProcessor(TokenisedRunsMixin, MergingProcessorMixin, VoxtralMultiModalProcessor):
    """vLLM's Voxtral processor with `sum_c M_c` placeholders per clip (mistral-common's runs shortened)."""

    def _item_unit_lengths(self, out_mm_data: Mapping[str, Any], item_idx: int) -> list[int]:
        """375 tokens per 30 s chunk of the clip (mistral-common pads it to whole chunks)."""
        audio = self.info.get_tokenizer().instruct.audio_encoder.audio_config
        chunk = round(audio.chunk_length_s * audio.sampling_rate)
        samples = len(out_mm_data["audio_arrays"][item_idx])
        per_chunk = self.info.get_feature_extractor().get_num_audio_tokens(chunk)
        return [per_chunk] * max(1, math.ceil(samples / chunk))


@MULTIMODAL_REGISTRY.register_processor(
    VoxtralLTBMMultiModalProcessor, info=VoxtralLTBMProcessingInfo, dummy_inputs=VoxtralDummyInputsBuilder
)
class VoxtralLTBMForConditionalGeneration(MergingModelMixin, VoxtralForConditionalGeneration):
    """vLLM's Voxtral whose language model runs on each 30 s chunk's merged audio tokens."""

    def _parse_and_validate_audio_input(self, **kwargs: object) -> Optional[dict[str, Any]]:
        """The clips' waveforms (`audio_arrays`: `[samples]` each, padded to whole chunks), or `None`."""
        arrays = self._parse_and_validate_audio_arrays(**kwargs)
        return None if arrays is None else {"type": "audio_arrays", "audio_arrays": arrays}

    def _process_audio_input(self, audio_input: Mapping[str, Any]) -> Any:
        """The stock embeddings `[375 * chunks, D_text]` per clip."""
        return VoxtralForConditionalGeneration.embed_multimodal(self, audio_arrays=audio_input["audio_arrays"])

    def _merged_audio(
        self, audio_input: Any, settings: list[Optional[AudioTokenMergeConfig]]
    ) -> tuple[torch.Tensor, ...]:
        arrays = audio_input["audio_arrays"]
        encoder = self.whisper_encoder
        samples_per_chunk = encoder.chunk_size * encoder.config.hop_length
        chunks = [max(1, math.ceil(len(wave) / samples_per_chunk)) for wave in arrays]
        per_chunk = per_unit(settings, chunks)
        mel_lengths = torch.full((len(per_chunk),), encoder.chunk_size)
        with capture_merge_inputs(encoder.whisper_encoder, per_chunk, mel_lengths) as merge_inputs:
            frames = encoder(arrays)  # [1500 * chunks, D_audio] per clip
        hidden = torch.cat(frames).reshape(len(per_chunk), -1, frames[0].shape[-1] * self.downsample_factor)
        lengths = torch.full((len(per_chunk),), hidden.shape[1])  # [chunks]: 375 tokens each
        merge_inputs = merge_inputs_at_token_rate(merge_inputs, self.downsample_factor)
        merged = merge_units(hidden, lengths, per_chunk, self.audio_language_adapter, merge_inputs).split()
        return per_item(merged, chunks)
