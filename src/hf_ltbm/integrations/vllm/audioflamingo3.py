"""Audio Flamingo 3 served by vLLM with merged audio tokens (one merge per 30 s window, summed per clip)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from vllm.model_executor.models import audioflamingo3 as stock

from ...config import AudioTokenMergeConfig
from ...models.units import capture_merge_inputs, merge_units
from .processing import MergingModelMixin, merging_processor

__all__ = ["AudioFlamingo3LTBMForConditionalGeneration"]  # and its processor, made by `merging_processor`


@merging_processor(
    stock.AudioFlamingo3MultiModalProcessor, stock.AudioFlamingo3ProcessingInfo, stock.AudioFlamingo3DummyInputsBuilder
)
class AudioFlamingo3LTBMForConditionalGeneration(MergingModelMixin, stock.AudioFlamingo3ForConditionalGeneration):
    """vLLM's Audio Flamingo 3 whose language model runs on each window's merged audio tokens."""

    def _merged_units(self, audio_input: Any, settings: list[Optional[AudioTokenMergeConfig]]) -> tuple[torch.Tensor]:
        features, mask, _ = self._normalize_audio_feature_inputs(audio_input)  # [windows, mel, 3000], [windows, 3000]
        mel_lengths = mask.sum(-1)
        with capture_merge_inputs(self.audio_tower, settings, mel_lengths) as merge_inputs:
            hidden = self._encode_audio_features(features, mask)  # [windows, T, D_audio]
        _, lengths = self.audio_tower._get_feat_extract_output_lengths(mel_lengths.long())
        return merge_units(hidden, lengths, settings, self.multi_modal_projector, merge_inputs).split()
