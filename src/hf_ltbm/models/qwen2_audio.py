"""Qwen2-Audio with audio-token merging: `Qwen2AudioLTBMModel` and `Qwen2AudioLTBMForConditionalGeneration`."""

from __future__ import annotations

from typing import Any

import torch
from transformers.models.qwen2_audio.modeling_qwen2_audio import (
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioModel,
    Qwen2AudioPreTrainedModel,
)

from ..compat import create_bidirectional_mask, mirrors
from .mixin import AudioTokenMergeGenerationMixin, AudioTokenMergeModelMixin

__all__ = ["Qwen2AudioLTBMForConditionalGeneration", "Qwen2AudioLTBMModel"]


class Qwen2AudioLTBMModel(AudioTokenMergeModelMixin, Qwen2AudioModel):
    """`Qwen2AudioModel` whose language model runs on merged audio tokens (one merge per clip).

    Accepts an extra `audio_token_merge` argument (a method name such as `"ltbm"`, a dict, an
    `AudioTokenMergeConfig`, or `None` for merging off), stored in `config.audio_token_merge`.
    """

    _upstream_class = Qwen2AudioModel
    _audio_mask_name = "feature_attention_mask"

    def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
        # The same steps as the upstream forward (audio attention mask from the conv output lengths).
        target = self.audio_tower.device
        input_features, feature_mask = input_features.to(target), feature_mask.to(target)
        frame_lengths, _ = self.audio_tower._get_feat_extract_output_lengths(feature_mask.sum(-1))
        batch, _, mel_len = input_features.shape
        max_frames = (mel_len - 2) // 2 + 1
        frames = torch.arange(max_frames, dtype=frame_lengths.dtype, device=frame_lengths.device)[None]
        mask_2d = (frames < frame_lengths[:, None]).long()
        dummy = torch.zeros((batch, max_frames, 1), dtype=self.get_input_embeddings().weight.dtype, device=target)
        audio_mask = create_bidirectional_mask(
            config=self.audio_tower.config, inputs_embeds=dummy, attention_mask=mask_2d
        )
        return self.audio_tower(input_features, attention_mask=audio_mask).last_hidden_state

    def get_audio_features(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor, **kwargs: Any):
        """Encodes each clip, merges it with the configured setting and projects it (AF3's API, new for Qwen2-Audio).

        Args:
            input_features (`torch.FloatTensor` of shape `[num_clips, num_mel_bins, 3000]`): log-mel features.
            feature_attention_mask (`torch.LongTensor` of shape `[num_clips, 3000]`): valid mel frames.

        Returns:
            `AudioTokenMergeOutput`: `pooler_output [sum(M), hidden_size]` (clips concatenated),
            `audio_token_counts [num_clips]` (`M` per clip), `num_input_tokens [num_clips]` (`N` per clip).
        """
        return super().get_audio_features(input_features, feature_attention_mask, **kwargs)

    @mirrors(Qwen2AudioModel.forward)
    def forward(self, *args: Any, **kwargs: Any):
        """Upstream `Qwen2AudioModel.forward` (same signature) when merging is off; otherwise the merged audio tokens
        replace the placeholders and, for a prompt expanded to the unmerged count, the sequence is compacted (see
        `AudioTokenMergeModelOutput` for the returned mask, positions and labels)."""
        return self._dispatch_forward(super().forward, args, kwargs)

    def _placeholder_name(self) -> str:
        return "<|AUDIO|>"


class Qwen2AudioLTBMForConditionalGeneration(AudioTokenMergeGenerationMixin, Qwen2AudioForConditionalGeneration):
    """`Qwen2AudioForConditionalGeneration` whose language model runs on merged audio tokens.

    Works with prompts from the merging processor (`M` placeholders per clip) and from the stock processor (`N`
    placeholders per clip, compacted inside the model at prefill). With no merge setting it is the upstream class.
    """

    _upstream_class = Qwen2AudioForConditionalGeneration
    _model_class = Qwen2AudioLTBMModel
    _pretrained_base = Qwen2AudioPreTrainedModel
    _audio_mask_name = "feature_attention_mask"

    @mirrors(Qwen2AudioForConditionalGeneration.forward)
    def forward(self, *args: Any, **kwargs: Any):
        """Upstream forward (same signature) when merging is off; with merging, the loss is computed on the compacted
        labels and the output (`AudioTokenMergeCausalLMOutput`) describes the sequence the KV cache holds."""
        return self._dispatch_forward(super().forward, args, kwargs)
