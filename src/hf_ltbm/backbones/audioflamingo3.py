"""Audio Flamingo 3: clips cut into 30 s windows (up to `max_audio_len`, 600 s by default), one merge per window.

A window of `N` encoder tokens becomes `output_length(N)` tokens, and a clip's `<sound>` placeholders are the sum over
its windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import AudioFlamingo3Config, AudioFlamingo3Processor
from transformers.models.audioflamingo3.modeling_audioflamingo3 import (
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Model,
    AudioFlamingo3PreTrainedModel,
)

from ..compat import can_return_tuple, mirrors
from ..config import MergeSetting
from ..models.mixin import AudioTokenMergeGenerationMixin, AudioTokenMergeModelMixin
from ..processing import MergeSettingProcessorMixin, tokens_per_unit
from .base import Backbone, register_backbone

__all__ = [
    "AudioFlamingo3Backbone",
    "AudioFlamingo3LTBMForConditionalGeneration",
    "AudioFlamingo3LTBMModel",
    "AudioFlamingo3LTBMProcessor",
    "WindowedMergeProcessorMixin",
    "audioflamingo3_windows",
    "windows_per_clip",
]


def audioflamingo3_windows(processor: Any) -> tuple[int, int]:
    """`(samples per window, windows kept per clip)` of an Audio Flamingo 3 processor: upstream cuts clips into
    `chunk_length` (30 s) windows and keeps the first `floor(max_audio_len / chunk_length)` of them, so a
    `max_audio_len` that is not a multiple of 30 s keeps less than `max_audio_len` seconds."""
    extractor = processor.feature_extractor
    return int(extractor.sampling_rate * extractor.chunk_length), int(
        processor.max_audio_len // extractor.chunk_length
    )


def windows_per_clip(processor: Any, num_samples: list[int]) -> list[int]:
    """The 30 s windows (units) each clip of `num_samples[i]` samples becomes: one per started window, at most the
    windows upstream keeps."""
    window, kept = audioflamingo3_windows(processor)
    return [min(kept, max(1, -(-int(n) // window))) for n in num_samples]


class AudioFlamingo3LTBMModel(AudioTokenMergeModelMixin, AudioFlamingo3Model):
    """`AudioFlamingo3Model` whose language model runs on merged audio tokens (one merge per 30 s window).

    Accepts an extra `audio_token_merge` argument, stored in `config.audio_token_merge` (see `Qwen2AudioLTBMModel`).
    """

    _upstream_class = AudioFlamingo3Model
    _audio_mask_name = "input_features_mask"

    def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor, **kwargs: Any) -> Any:
        return self.audio_tower(input_features, input_features_mask=feature_mask, return_dict=True, **kwargs)

    @can_return_tuple
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
        return self._merged_audio_features(input_features, input_features_mask, **kwargs)

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


class WindowedMergeProcessorMixin(MergeSettingProcessorMixin):
    """What the processors of backbones that cut clips into 30 s windows share (Audio Flamingo 3, Music Flamingo):
    the too-long-audio message and the merged placeholder count of each clip (the sum over its windows). Features are
    always padded to whole windows (the encoder needs them; upstream crashes when `padding` reaches the feature
    extractor), and the placeholders go through the upstream `replace_audio_token` (with any markers around them)."""

    _family: str

    def _duration_limit(self) -> tuple[str, str]:
        window, kept = audioflamingo3_windows(self)
        seconds = window / self.feature_extractor.sampling_rate
        if kept < 1:
            raise ValueError(
                f"max_audio_len={self.max_audio_len!r} keeps no {seconds:g} s window: {self._family} takes audio in "
                "whole windows, so `max_audio_len` must be at least one window long."
            )
        return (
            f"{self._family} (max_audio_len={self.max_audio_len}: {kept} whole {seconds:g} s windows)",
            "Cut it into shorter clips, or raise `max_audio_len` if the checkpoint supports longer audio.",
        )

    def _process_audio(self, audio, **kwargs):
        self.check_audio_lengths([int(np.asarray(clip).shape[0]) for clip in audio], int(kwargs["sampling_rate"]))
        kwargs["padding"] = "max_length"
        audio_inputs, replacements = super()._process_audio(audio, **kwargs)
        if self.audio_token_merge is None:
            return audio_inputs, replacements
        windows = windows_per_clip(self, [int(np.asarray(clip).shape[0]) for clip in audio])
        per_window = [self.merged_length(n) for n in tokens_per_unit(audio_inputs["input_features_mask"].sum(-1))]
        starts = np.cumsum([0] + windows)
        counts = [sum(per_window[starts[i] : starts[i + 1]]) for i in range(len(windows))]
        audio_inputs["num_audio_tokens"] = torch.tensor(counts)
        return audio_inputs, [self.replace_audio_token(audio_inputs, audio_idx=i) for i in range(len(counts))]


class AudioFlamingo3LTBMProcessor(WindowedMergeProcessorMixin, AudioFlamingo3Processor):
    """`AudioFlamingo3Processor` that emits `sum_w output_length(N_w, ...)` `<sound>` placeholders per clip.

    Each clip is cut into 30 s windows `w` of `N_w` encoder tokens (750 for a full window), one row of
    `input_features [num_windows, num_mel_bins, 3000]` / `input_features_mask [num_windows, 3000]` each (the windows
    of all clips, in order); with a merge setting only `input_ids` / `attention_mask` are shorter than upstream's.
    Audio features are always padded to whole 30 s windows (the encoder needs them; upstream crashes when `padding`
    reaches the feature extractor), and audio longer than `max_audio_len` raises instead of being truncated.

    Args:
        feature_extractor, tokenizer, chat_template, audio_token, default_transcription_prompt, max_audio_len:
            as for `AudioFlamingo3Processor`.
        audio_token_merge (`str`, `dict` or `AudioTokenMergeConfig`, *optional*): the model's merge setting.
    """

    _upstream_class = AudioFlamingo3Processor
    _family = "Audio Flamingo 3"

    def __init__(
        self,
        feature_extractor,
        tokenizer,
        chat_template=None,
        audio_token="<sound>",
        default_transcription_prompt="Transcribe the input speech.",
        max_audio_len=600,
        audio_token_merge: MergeSetting = None,
    ):
        self._init_setting(audio_token_merge)
        super().__init__(
            feature_extractor,
            tokenizer,
            chat_template=chat_template,
            audio_token=audio_token,
            default_transcription_prompt=default_transcription_prompt,
            max_audio_len=max_audio_len,
        )


_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<sound>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)


@register_backbone
class AudioFlamingo3Backbone(Backbone):
    """Audio Flamingo 3 (`nvidia/audio-flamingo-3-hf`): one unit per started 30 s window of a clip."""

    model_type = "audioflamingo3"
    display_name = "Audio Flamingo 3"
    config_class = AudioFlamingo3Config
    upstream_processor = AudioFlamingo3Processor
    base_model = AudioFlamingo3LTBMModel
    generation_model = AudioFlamingo3LTBMForConditionalGeneration
    processor = AudioFlamingo3LTBMProcessor
    tiny_name = "tiny-random-audioflamingo3"
    tiny_encoder_type = "audioflamingo3_encoder"
    tiny_audio_tokens = ("<sound>",)
    tiny_chat_template = _TINY_CHAT_TEMPLATE

    def units_per_clip(self, processor: Any, num_samples: list[int]) -> list[int]:
        """One unit per started 30 s window, at most the windows upstream keeps (`max_audio_len`)."""
        return windows_per_clip(processor, num_samples)

    def max_audio_seconds(self, processor: Any) -> float:
        """The whole windows that fit in `max_audio_len` (600 s by default)."""
        window, kept = audioflamingo3_windows(processor)
        return kept * window / processor.feature_extractor.sampling_rate
