"""GLM-ASR served by vLLM with merged audio tokens (one merge per 30 s window, on the 4-frame tokens its projector
reads, summed per clip)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from vllm.model_executor.models import glmasr as stock

from ...config import AudioTokenMergeConfig
from ...layout import tokens_for_frames
from ...models.units import capture_merge_inputs, merge_inputs_at_token_rate, merge_units, stacked_tokens
from .processing import MergingModelMixin, family_of, merging_processor

__all__ = ["GlmAsrLTBMForConditionalGeneration"]  # and its processor, made by `merging_processor`


@merging_processor(stock.GlmAsrMultiModalProcessor, stock.GlmAsrProcessingInfo, stock.GlmAsrDummyInputsBuilder)
class GlmAsrLTBMForConditionalGeneration(MergingModelMixin, stock.GlmAsrForConditionalGeneration):
    """vLLM's GLM-ASR whose language model runs on each window's merged audio tokens."""

    def _merged_units(self, audio_input: Any, settings: list[Optional[AudioTokenMergeConfig]]) -> tuple[torch.Tensor]:
        features, mask = audio_input["input_features"], audio_input["feature_attention_mask"]
        if isinstance(features, list):  # [windows, mel, 3000], [windows, 3000] per item
            features, mask = torch.cat(features), torch.cat(mask)
        family, mel_lengths = family_of(type(self)), mask.sum(-1).long()
        with capture_merge_inputs(self.audio_tower, settings, mel_lengths) as merge_inputs:
            frames = self.audio_tower(features.to(self.audio_tower.conv1.weight.dtype)).last_hidden_state
        hidden = stacked_tokens(frames, family.stacked_frames)  # [windows, 375, 4 * D_audio]
        lengths = tokens_for_frames(mel_lengths, family.mel_frames_per_token)
        merge_inputs = merge_inputs_at_token_rate(merge_inputs, family.stacked_frames)
        return merge_units(hidden, lengths, settings, self.multi_modal_projector, merge_inputs).split()
