"""Voxtral served by vLLM with merged audio tokens (one merge per 30 s chunk, 375 tokens each, summed per clip).

vLLM reads Voxtral in Mistral's format only (`params.json`, `consolidated.safetensors`, `tekken.json`) and needs
`tokenizer_mode="mistral"`; the prompt arrives tokenised by mistral-common with 375 `[AUDIO]` per chunk, and the
processor shortens each clip's run to `M` (`TokenisedRunsMixin`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
from vllm.model_executor.models import voxtral as stock

from ...config import AudioTokenMergeConfig
from ...models.units import capture_merge_inputs, merge_inputs_at_token_rate, merge_units
from .processing import MergingModelMixin, TokenisedRunsMixin, merging_processor

__all__ = ["VoxtralLTBMForConditionalGeneration"]  # and its processor, made by `merging_processor`


@merging_processor(
    stock.VoxtralMultiModalProcessor, stock.VoxtralProcessingInfo, stock.VoxtralDummyInputsBuilder, TokenisedRunsMixin
)
class VoxtralLTBMForConditionalGeneration(MergingModelMixin, stock.VoxtralForConditionalGeneration):
    """vLLM's Voxtral whose language model runs on each 30 s chunk's merged audio tokens."""

    def _parse_and_validate_audio_input(self, **kwargs: object) -> Optional[dict[str, Any]]:
        """The clips' waveforms (`audio_arrays`: `[samples]` each, padded to whole chunks), or `None`."""
        arrays = self._parse_and_validate_audio_arrays(**kwargs)
        return None if arrays is None else {"type": "audio_arrays", "audio_arrays": arrays}

    def _process_audio_input(self, audio_input: Mapping[str, Any]) -> Any:
        """The stock embeddings `[375 * chunks, D_text]` per clip."""
        return stock.VoxtralForConditionalGeneration.embed_multimodal(self, audio_arrays=audio_input["audio_arrays"])

    def _merged_units(self, audio_input: Any, settings: list[Optional[AudioTokenMergeConfig]]) -> tuple[torch.Tensor]:
        encoder = self.whisper_encoder
        mel_lengths = torch.full((len(settings),), encoder.chunk_size)  # every chunk whole
        with capture_merge_inputs(encoder.whisper_encoder, settings, mel_lengths) as merge_inputs:
            frames = encoder(audio_input["audio_arrays"])  # [1500 * chunks, D_audio] per clip
        hidden = torch.cat(frames).reshape(len(settings), -1, frames[0].shape[-1] * self.downsample_factor)
        lengths = torch.full((len(settings),), hidden.shape[1])  # [chunks]: 375 tokens each
        merge_inputs = merge_inputs_at_token_rate(merge_inputs, self.downsample_factor)
        return merge_units(hidden, lengths, settings, self.audio_language_adapter, merge_inputs).split()
