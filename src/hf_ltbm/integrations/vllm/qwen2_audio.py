"""Qwen2-Audio served by vLLM with merged audio tokens (one merge per clip)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch.nn.utils.rnn import pad_sequence
from vllm.model_executor.models.qwen2_audio import (
    Qwen2AudioDummyInputsBuilder,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioMultiModalProcessor,
    Qwen2AudioProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...config import AudioTokenMergeConfig
from ...models.units import capture_merge_inputs, merge_units
from .processing import MergingModelMixin, MergingProcessingInfoMixin, MergingProcessorMixin, projector_skipped

__all__ = ["Qwen2AudioLTBMForConditionalGeneration", "Qwen2AudioLTBMMultiModalProcessor"]


class Qwen2AudioLTBMProcessingInfo(MergingProcessingInfoMixin, Qwen2AudioProcessingInfo):
    """vLLM's `Qwen2AudioProcessingInfo` composed with the mixin, which loads the Hugging Face processor without
    the merge setting (the registered processor needs an info class; it has nothing else to add)."""


class Qwen2AudioLTBMMultiModalProcessor(MergingProcessorMixin, Qwen2AudioMultiModalProcessor):
    """vLLM's Qwen2-Audio processor with `M` placeholders per clip."""

    def _item_unit_masks(self, out_mm_data: Mapping[str, Any], item_idx: int) -> torch.Tensor:
        return out_mm_data["feature_attention_mask"][item_idx][None]


@MULTIMODAL_REGISTRY.register_processor(
    Qwen2AudioLTBMMultiModalProcessor, info=Qwen2AudioLTBMProcessingInfo, dummy_inputs=Qwen2AudioDummyInputsBuilder
)
class Qwen2AudioLTBMForConditionalGeneration(MergingModelMixin, Qwen2AudioForConditionalGeneration):
    """vLLM's Qwen2-Audio whose language model runs on each clip's merged audio tokens."""

    def _merged_audio(
        self, audio_input: Any, settings: list[Optional[AudioTokenMergeConfig]]
    ) -> tuple[torch.Tensor, ...]:
        mel_lengths = audio_input["feature_attention_mask"].sum(-1)
        with projector_skipped(self), capture_merge_inputs(self.audio_tower, settings, mel_lengths) as merge_inputs:
            clips = self._process_audio_input(audio_input)  # encoder states [N_i, D_audio] per clip
        lengths = torch.tensor([clip.shape[0] for clip in clips])
        hidden = pad_sequence(list(clips), batch_first=True)
        return merge_units(hidden, lengths, settings, self.multi_modal_projector, merge_inputs).split()
