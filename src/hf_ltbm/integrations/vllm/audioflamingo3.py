"""Audio Flamingo 3 served by vLLM with merged audio tokens (one merge per 30 s window, summed per clip)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
from vllm.model_executor.models.audioflamingo3 import (
    AudioFlamingo3DummyInputsBuilder,
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3MultiModalProcessor,
    AudioFlamingo3ProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...config import AudioTokenMergeConfig
from ...models.units import capture_merge_inputs, merge_units, per_item, per_unit, unit_offsets
from .processing import MergingModelMixin, MergingProcessingInfoMixin, MergingProcessorMixin

__all__ = ["AudioFlamingo3LTBMForConditionalGeneration", "AudioFlamingo3LTBMMultiModalProcessor"]


class AudioFlamingo3LTBMProcessingInfo(MergingProcessingInfoMixin, AudioFlamingo3ProcessingInfo):
    """vLLM's `AudioFlamingo3ProcessingInfo` composed with the mixin, which loads the Hugging Face processor without
    the merge setting (the registered processor needs an info class; it has nothing else to add)."""


class AudioFlamingo3LTBMMultiModalProcessor(MergingProcessorMixin, AudioFlamingo3MultiModalProcessor):
    """vLLM's Audio Flamingo 3 processor with `sum_w M_w` placeholders per clip."""

    def _item_unit_masks(self, out_mm_data: Mapping[str, Any], item_idx: int) -> torch.Tensor:
        offsets = unit_offsets(out_mm_data["chunk_counts"])
        rows = out_mm_data["feature_attention_mask"][offsets[item_idx] : offsets[item_idx + 1]]
        return torch.stack(list(rows)) if isinstance(rows, list) else rows


@MULTIMODAL_REGISTRY.register_processor(
    AudioFlamingo3LTBMMultiModalProcessor,
    info=AudioFlamingo3LTBMProcessingInfo,
    dummy_inputs=AudioFlamingo3DummyInputsBuilder,
)
class AudioFlamingo3LTBMForConditionalGeneration(MergingModelMixin, AudioFlamingo3ForConditionalGeneration):
    """vLLM's Audio Flamingo 3 whose language model runs on each window's merged audio tokens."""

    def _merged_audio(
        self, audio_input: Any, settings: list[Optional[AudioTokenMergeConfig]]
    ) -> tuple[torch.Tensor, ...]:
        features, mask, chunk_counts = self._normalize_audio_feature_inputs(audio_input)
        per_window = per_unit(settings, chunk_counts)
        mel_lengths = mask.sum(-1)
        with capture_merge_inputs(self.audio_tower, per_window, mel_lengths) as merge_inputs:
            hidden = self._encode_audio_features(features, mask)  # [windows, T, D_audio]
        _, lengths = self.audio_tower._get_feat_extract_output_lengths(mel_lengths.long())
        windows = merge_units(hidden, lengths, per_window, self.multi_modal_projector, merge_inputs).split()
        return per_item(windows, chunk_counts)
