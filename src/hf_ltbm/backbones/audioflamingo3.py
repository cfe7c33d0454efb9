"""Audio Flamingo 3: clips cut into 30 s windows (up to `max_audio_len`, 600 s by default), one merge per window.

A window of `N` encoder tokens becomes `output_length(N)` tokens, and a clip's `<sound>` placeholders are the sum over
its windows.
"""

from __future__ import annotations

from typing import Any

from .base import Backbone, BackboneClasses, class_getter, register_backbone

__all__ = [
    "AudioFlamingo3Backbone",
    "AudioFlamingo3LTBMForConditionalGeneration",
    "AudioFlamingo3LTBMModel",
    "AudioFlamingo3LTBMProcessor",
]


def _build() -> BackboneClasses:
    """Makes Audio Flamingo 3's merging classes (`AudioFlamingo3Backbone.build`)."""
    import torch
    from transformers import AudioFlamingo3Processor
    from transformers.models.audioflamingo3.modeling_audioflamingo3 import (
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Model,
        AudioFlamingo3PreTrainedModel,
    )

    from ..compat import can_return_tuple
    from ..config import MergeSetting
    from ..models.generation import AudioTokenMergeGenerationMixin
    from ..models.model import AudioTokenMergeModelMixin
    from ..processing import WindowedMergeProcessorMixin

    class AudioFlamingo3LTBMModel(AudioTokenMergeModelMixin, AudioFlamingo3Model):
        """`AudioFlamingo3Model` whose language model runs on merged audio tokens (one merge per 30 s window).

        Accepts an extra `audio_token_merge` argument, stored in `config.audio_token_merge` (see
        `Qwen2AudioLTBMModel`).
        """

        _upstream_class = AudioFlamingo3Model

        def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor, **kwargs: Any) -> Any:
            return self.audio_tower(input_features, input_features_mask=feature_mask, return_dict=True, **kwargs)

        @can_return_tuple
        def get_audio_features(self, input_features: torch.Tensor, input_features_mask: torch.Tensor, **kwargs: Any):
            """Upstream `get_audio_features` when merging is off; otherwise encodes each window, merges it and projects
            it.

            Args:
                input_features (`torch.FloatTensor` of shape `[num_windows, num_mel_bins, 3000]`): log-mel features.
                input_features_mask (`torch.LongTensor` of shape `[num_windows, 3000]`): valid mel frames per window.

            Returns:
                Merging on: `AudioTokenMergeOutput` with `pooler_output [sum(M_w), hidden_size]` (windows
                concatenated), `audio_token_counts [num_windows]` (`M_w`) and `num_input_tokens [num_windows]` (`N_w`).
            """
            if self.audio_token_merge is None:
                return AudioFlamingo3Model.get_audio_features(self, input_features, input_features_mask, **kwargs)
            return self._merged_audio_features(input_features, input_features_mask, **kwargs)

        def _placeholder_name(self) -> str:
            return "<sound>"

    class AudioFlamingo3LTBMForConditionalGeneration(
        AudioTokenMergeGenerationMixin, AudioFlamingo3ForConditionalGeneration
    ):
        """`AudioFlamingo3ForConditionalGeneration` whose language model runs on merged audio tokens (per 30 s window).

        Works with prompts from the merging processor and from the stock processor (compacted at prefill). With no
        merge setting it is the upstream class.
        """

        _upstream_class = AudioFlamingo3ForConditionalGeneration
        _model_class = AudioFlamingo3LTBMModel
        _pretrained_base = AudioFlamingo3PreTrainedModel

    class AudioFlamingo3LTBMProcessor(WindowedMergeProcessorMixin, AudioFlamingo3Processor):
        """`AudioFlamingo3Processor` that emits `sum_w output_length(N_w, ...)` `<sound>` placeholders per clip.

        Each clip is cut into 30 s windows `w` of `N_w` encoder tokens (750 for a full window), one row of
        `input_features [num_windows, num_mel_bins, 3000]` / `input_features_mask [num_windows, 3000]` each (the
        windows of all clips, in order); with a merge setting only `input_ids` / `attention_mask` are shorter than
        upstream's. Audio features are always padded to whole 30 s windows (the encoder needs them; upstream crashes
        when `padding` reaches the feature extractor), and audio longer than `max_audio_len` raises instead of being
        truncated.

        Args:
            feature_extractor, tokenizer, chat_template, audio_token, default_transcription_prompt, max_audio_len:
                as for `AudioFlamingo3Processor`.
            audio_token_merge (`str`, `dict` or `AudioTokenMergeConfig`, *optional*): the model's merge setting.
        """

        _upstream_class = AudioFlamingo3Processor

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

    return BackboneClasses(
        AudioFlamingo3LTBMModel, AudioFlamingo3LTBMForConditionalGeneration, AudioFlamingo3LTBMProcessor
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
    default_checkpoint = "nvidia/audio-flamingo-3-hf"
    class_prefix = "AudioFlamingo3"
    config_name = "AudioFlamingo3Config"
    processor_name = "AudioFlamingo3Processor"
    feature_mask = "input_features_mask"
    required_hooks = (
        ("transformers", "AudioFlamingo3Model"),
        ("transformers", "AudioFlamingo3Processor._process_audio"),
        ("transformers", "AudioFlamingo3Processor.replace_audio_token"),
    )
    vllm_architectures = ("AudioFlamingo3ForConditionalGeneration",)
    task_prompts = {"asr": "Transcribe the input speech."}  # its processor's `default_transcription_prompt`
    listing_order = 1
    tiny_encoder_type = "audioflamingo3_encoder"
    tiny_audio_tokens = ("<sound>",)
    tiny_chat_template = _TINY_CHAT_TEMPLATE

    max_seconds_attribute = "max_audio_len"  # the feature extractor's 30 s windows, as many as it allows

    build = staticmethod(_build)


__getattr__ = class_getter(AudioFlamingo3Backbone)  # the merging classes, made on first use
