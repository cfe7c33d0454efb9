"""Audio Flamingo 3 with audio-token merging: the base model and the conditional-generation model.

AF3 cuts audio into 30 s windows (up to 20 per clip); the merge runs per window, so a window of `N` tokens becomes
`output_length(N)` tokens and a clip's placeholders are the sum over its windows.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.models.audioflamingo3.modeling_audioflamingo3 import (
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Model,
    AudioFlamingo3PreTrainedModel,
)

from ..compat import mirrors
from .mixin import AudioTokenMergeGenerationMixin, AudioTokenMergeModelMixin

__all__ = ["AudioFlamingo3LTBMForConditionalGeneration", "AudioFlamingo3LTBMModel"]


class AudioFlamingo3LTBMModel(AudioTokenMergeModelMixin, AudioFlamingo3Model):
    """`AudioFlamingo3Model` whose language model runs on merged audio tokens (one merge per 30 s window).

    Accepts an extra `audio_token_merge` argument, stored in `config.audio_token_merge` (see `Qwen2AudioLTBMModel`).
    """

    _upstream_class = AudioFlamingo3Model
    _audio_mask_name = "input_features_mask"

    def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
        return self.audio_tower(input_features, input_features_mask=feature_mask, return_dict=True).last_hidden_state

    def get_audio_features(self, input_features: torch.Tensor, input_features_mask: torch.Tensor, **kwargs: Any):
        """Upstream `get_audio_features` when merging is off; otherwise encodes each window, merges it and projects it.

        Args:
            input_features (`torch.FloatTensor` of shape `[num_windows, num_mel_bins, 3000]`): log-mel features.
            input_features_mask (`torch.LongTensor` of shape `[num_windows, 3000]`): valid mel frames per window.

        Returns:
            Merging on: `AudioTokenMergeOutput` with `pooler_output [sum(M_w), hidden_size]` (windows concatenated),
            `audio_token_counts [num_windows]` (`M_w`) and `num_input_tokens [num_windows]` (`N_w`).
        """
        if self.audio_token_merge is None:
            return AudioFlamingo3Model.get_audio_features(self, input_features, input_features_mask, **kwargs)
        return AudioTokenMergeModelMixin.get_audio_features(self, input_features, input_features_mask, **kwargs)

    @mirrors(AudioFlamingo3Model.forward)
    def forward(self, *args: Any, **kwargs: Any):
        """Upstream `AudioFlamingo3Model.forward` (same signature) when merging is off; otherwise the merged audio
        tokens replace the placeholders and a prompt with the unmerged count is compacted (`labels`, which upstream's
        base model does not take, are compacted with it)."""
        return self._dispatch_forward(super().forward, args, kwargs)

    def _placeholder_name(self) -> str:
        return "<sound>"


class AudioFlamingo3LTBMForConditionalGeneration(
    AudioTokenMergeGenerationMixin, AudioFlamingo3ForConditionalGeneration
):
    """`AudioFlamingo3ForConditionalGeneration` whose language model runs on merged audio tokens (per 30 s window).

    Works with prompts from the merging processor and from the stock processor (compacted at prefill). With no merge
    setting it is the upstream class.
    """

    _upstream_class = AudioFlamingo3ForConditionalGeneration
    _model_class = AudioFlamingo3LTBMModel
    _pretrained_base = AudioFlamingo3PreTrainedModel
    _audio_mask_name = "input_features_mask"

    @mirrors(AudioFlamingo3ForConditionalGeneration.forward)
    def forward(self, *args: Any, **kwargs: Any):
        """Upstream forward (same signature) when merging is off; with merging, the loss is computed on the compacted
        labels and the output (`AudioTokenMergeCausalLMOutput`) describes the sequence the KV cache holds."""
        return self._dispatch_forward(super().forward, args, kwargs)
