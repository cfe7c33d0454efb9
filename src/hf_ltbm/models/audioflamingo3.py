"""Audio Flamingo 3 with audio-token merging: the base model and the conditional-generation model.

AF3 cuts audio into 30 s windows (up to 20 per clip); the merge runs per window, so a window of `N` tokens becomes
`output_length(N)` tokens and a clip's placeholders are the sum over its windows.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from transformers.cache_utils import Cache
from transformers.models.audioflamingo3.modeling_audioflamingo3 import (
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Model,
    AudioFlamingo3PreTrainedModel,
)

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

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        input_features: Optional[torch.Tensor] = None,
        input_features_mask: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Cache] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        labels: Optional[torch.LongTensor] = None,
        **kwargs: Any,
    ):
        """Upstream `AudioFlamingo3Model.forward` when merging is off (where `labels` is not accepted); otherwise the
        merged audio tokens replace the placeholders and a prompt with the unmerged count is compacted."""
        inputs = dict(
            input_ids=input_ids,
            input_features=input_features,
            input_features_mask=input_features_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        if self.audio_token_merge is None:
            if labels is not None:
                raise TypeError("AudioFlamingo3Model.forward() got an unexpected keyword argument 'labels'")
            return super().forward(**inputs)
        return self._merging_forward(labels=labels, **inputs)

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

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        input_features: Optional[torch.Tensor] = None,
        input_features_mask: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Cache] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ):
        """Upstream forward when merging is off; with merging, the loss is computed on the compacted labels."""
        inputs = dict(
            input_ids=input_ids,
            input_features=input_features,
            input_features_mask=input_features_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        if self.audio_token_merge is None:
            return super().forward(**inputs)
        return self._merging_lm_forward(**inputs)
