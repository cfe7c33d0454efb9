"""Qwen2-Audio served by vLLM with merged audio tokens (one merge per clip)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch.nn.utils.rnn import pad_sequence
from vllm.model_executor.models import qwen2_audio as stock

from ...config import AudioTokenMergeConfig
from ...models.units import capture_merge_inputs, merge_units
from .processing import MergingModelMixin, merging_processor, projector_skipped

__all__ = ["Qwen2AudioLTBMForConditionalGeneration"]  # and its processor, made by `merging_processor`


@merging_processor(
    stock.Qwen2AudioMultiModalProcessor, stock.Qwen2AudioProcessingInfo, stock.Qwen2AudioDummyInputsBuilder
)
class Qwen2AudioLTBMForConditionalGeneration(MergingModelMixin, stock.Qwen2AudioForConditionalGeneration):
    """vLLM's Qwen2-Audio whose language model runs on each clip's merged audio tokens."""

    def _merged_units(self, audio_input: Any, settings: list[Optional[AudioTokenMergeConfig]]) -> tuple[torch.Tensor]:
        mel_lengths = audio_input["feature_attention_mask"].sum(-1)
        with projector_skipped(self), capture_merge_inputs(self.audio_tower, settings, mel_lengths) as merge_inputs:
            clips = self._process_audio_input(audio_input)  # encoder states [N_i, D_audio] per clip
        lengths = torch.tensor([clip.shape[0] for clip in clips])
        hidden = pad_sequence(list(clips), batch_first=True)
        return merge_units(hidden, lengths, settings, self.multi_modal_projector, merge_inputs).split()
