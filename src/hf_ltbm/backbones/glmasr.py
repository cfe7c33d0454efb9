"""GLM-ASR: clips cut into 30 s windows (up to `max_audio_len`, 655 s by default), one merge per window.

GLM-ASR's processor is Audio Flamingo 3's (30 s windows with a feature mask, the placeholders of a clip summed over
its windows), and its encoder a Whisper-style one with rotary positions and no pooling: 1500 frames per window, which
its projector reads **4 at a time, concatenated** (`stacked_frames`), so a full window is 375 tokens (12.5 per second)
and a window of `f` valid mel frames `tokens_for_frames(f, 8)`.

Where the merge happens: on those stacked tokens, before the projector (`space="encoder"`, the default), exactly
where Voxtral merges. A token there is the projector's own input unit (80 ms of audio), so every merged token is a
size-weighted mean of whole projector inputs and the projector runs on `M` tokens instead of `N`; merging single
encoder frames instead would change what the projector's 4-frame groups hold and could not say in advance how many
tokens come out. `space="projector"` merges the projected tokens. Either way a window of `N_w` tokens becomes
`output_length(N_w)`, known from the audio length alone, and at keep ratio 1.0 every window is upstream's.

The encoder rotates queries and keys by position inside its attention (rotary positions on half of each head), after
the projections the encoder probe reads: `key_source="encoder_keys"` merges by those keys before rotation (what a
frame holds, not where it sits), and settings that read the encoder's attention scores (`prune_attention`) are
refused, since the probe's projections are not what the encoder attends with.
"""

from __future__ import annotations

from typing import Any, Optional

from .base import Backbone, BackboneClasses, class_getter, register_backbone
from .tiny_parts import TinySpec, check_spec, tiny_text_config

__all__ = [
    "GlmAsrBackbone",
    "GlmAsrLTBMForConditionalGeneration",
    "GlmAsrLTBMModel",
    "GlmAsrLTBMProcessor",
]


def _build() -> BackboneClasses:
    """Makes GLM-ASR's merging classes (`GlmAsrBackbone.build`)."""
    import torch
    from transformers import GlmAsrProcessor
    from transformers.models.glmasr.modeling_glmasr import (
        GlmAsrForConditionalGeneration,
        GlmAsrModel,
        GlmAsrPreTrainedModel,
    )

    from ..compat import can_return_tuple
    from ..config import MergeSetting
    from ..models.generation import AudioTokenMergeGenerationMixin
    from ..models.model import AudioTokenMergeModelMixin
    from ..processing import WindowedMergeProcessorMixin

    class GlmAsrLTBMModel(AudioTokenMergeModelMixin, GlmAsrModel):
        """`GlmAsrModel` whose language model runs on merged audio tokens (one merge per 30 s window, on the 4-frame
        tokens its projector reads).

        Accepts an extra `audio_token_merge` argument, stored in `config.audio_token_merge` (see
        `Qwen2AudioLTBMModel`).
        """

        _upstream_class = GlmAsrModel

        def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor, **kwargs: Any) -> Any:
            return self.audio_tower(input_features, return_dict=True, **kwargs)  # upstream passes no mask

        def _unit_frames(self) -> int:
            return 2 * self.config.audio_config.max_position_embeddings  # the encoder's rotary positions: 3000

        @can_return_tuple
        def get_audio_features(self, input_features: torch.Tensor, input_features_mask: torch.Tensor, **kwargs: Any):
            """Upstream `get_audio_features` when merging is off; otherwise encodes each window, merges its 4-frame
            tokens and projects them.

            Args:
                input_features (`torch.FloatTensor` of shape `[num_windows, num_mel_bins, 3000]`): log-mel features.
                input_features_mask (`torch.LongTensor` of shape `[num_windows, 3000]`): valid mel frames per window.

            Returns:
                Merging on: `AudioTokenMergeOutput` with `pooler_output [sum(M_w), hidden_size]` (windows
                concatenated), `audio_token_counts [num_windows]` (`M_w`) and `num_input_tokens [num_windows]` (`N_w`).
            """
            if self.audio_token_merge is None:
                return GlmAsrModel.get_audio_features(self, input_features, input_features_mask, **kwargs)
            return self._merged_audio_features(input_features, input_features_mask, **kwargs)

        def _placeholder_name(self) -> str:
            return "<|pad|>"

    class GlmAsrLTBMForConditionalGeneration(AudioTokenMergeGenerationMixin, GlmAsrForConditionalGeneration):
        """`GlmAsrForConditionalGeneration` whose language model runs on merged audio tokens (per 30 s window).

        Works with prompts from the merging processor and from the stock processor (compacted at prefill). With no
        merge setting it is the upstream class.
        """

        _upstream_class = GlmAsrForConditionalGeneration
        _model_class = GlmAsrLTBMModel
        _pretrained_base = GlmAsrPreTrainedModel

    class GlmAsrLTBMProcessor(WindowedMergeProcessorMixin, GlmAsrProcessor):
        """`GlmAsrProcessor` that emits `sum_w output_length(N_w, ...)` `<|pad|>` placeholders per clip.

        Each clip is cut into 30 s windows `w` of `N_w` tokens (375 for a full window), one row of
        `input_features [num_windows, num_mel_bins, 3000]` / `input_features_mask [num_windows, 3000]` each; with a
        merge setting only `input_ids` / `attention_mask` are shorter than upstream's. Audio longer than
        `max_audio_len` raises instead of being truncated.

        Args:
            feature_extractor, tokenizer, chat_template, audio_token, default_transcription_prompt, max_audio_len:
                as for `GlmAsrProcessor`.
            audio_token_merge (`str`, `dict` or `AudioTokenMergeConfig`, *optional*): the model's merge setting.
        """

        _upstream_class = GlmAsrProcessor

        def __init__(
            self,
            feature_extractor,
            tokenizer,
            chat_template=None,
            audio_token="<|pad|>",
            default_transcription_prompt="Please transcribe this audio into text",
            max_audio_len=655,
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

    return BackboneClasses(GlmAsrLTBMModel, GlmAsrLTBMForConditionalGeneration, GlmAsrLTBMProcessor)


#: `<|begin_of_audio|><|pad|><|end_of_audio|>` per clip, as GLM-ASR's prompts (and vLLM's placeholder) hold it.
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|begin_of_audio|><|pad|><|end_of_audio|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)


@register_backbone
class GlmAsrBackbone(Backbone):
    """GLM-ASR (`zai-org/GLM-ASR-Nano-2512`): one unit per started 30 s window of a clip, 12.5 tokens per second."""

    model_type = "glmasr"
    display_name = "GLM-ASR"
    default_checkpoint = "zai-org/GLM-ASR-Nano-2512"
    class_prefix = "GlmAsr"
    config_name = "GlmAsrConfig"
    processor_name = "GlmAsrProcessor"
    feature_mask = "input_features_mask"
    extra_auto_classes = ("AutoModelForMultimodalLM",)
    required_hooks = (
        ("transformers", "GlmAsrModel"),
        ("transformers", "GlmAsrProcessor._process_audio"),
        ("transformers", "GlmAsrProcessor.replace_audio_token"),
    )
    vllm_architectures = ("GlmAsrForConditionalGeneration",)
    task_prompts = {"asr": "Please transcribe this audio into text"}  # its processor's `default_transcription_prompt`
    mel_frames_per_token = 8  # 12.5 tokens per second
    stacked_frames = 4  # the projector reads 4 encoder frames as one token
    max_seconds_attribute = "max_audio_len"  # the feature extractor's 30 s windows, as many as it allows
    attention_scores_unavailable = (
        "GLM-ASR's encoder rotates its queries and keys by position inside the attention, so the projections hf-ltbm "
        "reads are not the scores it attends with"
    )
    tiny_encoder_type = "glmasr_encoder"
    tiny_audio_tokens = ("<|pad|>", "<|begin_of_audio|>", "<|end_of_audio|>")
    tiny_chat_template = _TINY_CHAT_TEMPLATE

    build = staticmethod(_build)

    def tiny_config(self, processor: Any = None, spec: Optional[TinySpec] = None, **config_kwargs: Any) -> Any:
        """GLM-ASR's encoder (rotary positions, 4 frames concatenated per token: its MLP, which the projector's input
        width follows, is 4 times as wide) and a Llama language model (what vLLM builds), of `spec`'s sizes;
        untied embeddings."""
        spec = check_spec(spec)
        processor = processor if processor is not None else self.tiny_processor(None, spec)
        tokenizer = processor.tokenizer
        text = tiny_text_config(tokenizer, spec)
        text.update(model_type="llama", head_dim=spec.head_size)
        audio = dict(
            model_type=self.tiny_encoder_type,
            hidden_size=spec.audio_hidden_size,
            intermediate_size=self.stacked_frames * spec.audio_hidden_size,
            num_hidden_layers=spec.audio_layers,
            num_attention_heads=spec.audio_attention_heads,
            num_mel_bins=spec.mel_bins,
            max_position_embeddings=spec.max_source_positions,
        )
        kwargs = {
            "audio_token_id": tokenizer.convert_tokens_to_ids(processor.audio_token),
            "tie_word_embeddings": False,
            **config_kwargs,
        }
        return self.config_class(audio_config=audio, text_config=text, **kwargs)


__getattr__ = class_getter(GlmAsrBackbone)  # the merging classes, made on first use
