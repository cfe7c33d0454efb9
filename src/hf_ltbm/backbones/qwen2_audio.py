"""Qwen2-Audio: one merge per clip (at most 30 s, 750 encoder tokens, 25 per second).

`Qwen2AudioLTBMModel` and `Qwen2AudioLTBMForConditionalGeneration` run the language model on merged audio tokens;
`Qwen2AudioLTBMProcessor` emits `M = output_length(N)` `<|AUDIO|>` placeholders per clip.
"""

from __future__ import annotations

from typing import Any, Optional

from .base import Backbone, BackboneClasses, class_getter, register_backbone

__all__ = [
    "Qwen2AudioBackbone",
    "Qwen2AudioLTBMForConditionalGeneration",
    "Qwen2AudioLTBMModel",
    "Qwen2AudioLTBMProcessor",
]


def _build() -> BackboneClasses:
    """Makes Qwen2-Audio's merging classes (`Qwen2AudioBackbone.build`)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import Qwen2AudioProcessor
    from transformers.models.qwen2_audio.modeling_qwen2_audio import (
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioModel,
        Qwen2AudioPreTrainedModel,
    )

    from ..compat import create_bidirectional_mask
    from ..config import MergeSetting
    from ..models.generation import AudioTokenMergeGenerationMixin
    from ..models.model import AudioTokenMergeModelMixin
    from ..processing import MergeSettingProcessorMixin

    class Qwen2AudioLTBMModel(AudioTokenMergeModelMixin, Qwen2AudioModel):
        """`Qwen2AudioModel` whose language model runs on merged audio tokens (one merge per clip).

        Accepts an extra `audio_token_merge` argument (a method name such as `"ltbm"`, a dict, an
        `AudioTokenMergeConfig`, or `None` for merging off), stored in `config.audio_token_merge`.
        """

        _upstream_class = Qwen2AudioModel

        def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor, **kwargs: Any) -> Any:
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
            return self.audio_tower(input_features, attention_mask=audio_mask, return_dict=True, **kwargs)

        def get_audio_features(
            self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor, **kwargs: Any
        ):
            """Encodes each clip, merges it with the configured setting and projects it (the other families' API, new
            for Qwen2-Audio, whose upstream encodes inside `forward`).

            Args:
                input_features (`torch.FloatTensor` of shape `[num_clips, num_mel_bins, 3000]`): log-mel features.
                feature_attention_mask (`torch.LongTensor` of shape `[num_clips, 3000]`): valid mel frames.
                output_attentions, output_hidden_states, return_dict: as for upstream's `get_audio_features` methods.

            Returns:
                `AudioTokenMergeOutput` (a `BaseModelOutputWithPooling`, or a tuple with `return_dict=False`):
                `last_hidden_state [num_clips, 750, d_model]` (the encoder's), `pooler_output [sum(M), hidden_size]`
                (clips concatenated), `audio_token_counts [num_clips]` (`M` per clip), `num_input_tokens [num_clips]`
                (`N` per clip), and the encoder's `hidden_states` / `attentions` when asked for.
            """
            return super().get_audio_features(input_features, feature_attention_mask, **kwargs)

        def _audio_placeholder_mask(
            self, input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor]
        ) -> Optional[torch.Tensor]:
            """Upstream's rule: Qwen2-Audio inserts the audio only into a prompt it embeds itself (given as `input_ids`
            alone); the audio of a prompt given as `inputs_embeds` is not used, so it has no placeholders to fill."""
            return None if inputs_embeds is not None else super()._audio_placeholder_mask(input_ids, None)

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

        def _merging_loss(
            self,
            logits: torch.Tensor,
            labels: torch.LongTensor,
            attention_mask: Optional[torch.Tensor],
            **kwargs: Any,
        ) -> torch.Tensor:
            """Upstream Qwen2-Audio's own loss: next-token cross entropy averaged over the positions the 2D attention
            mask keeps (it reads no `shift_labels` / `num_items_in_batch`)."""
            shift_logits, shift_labels = logits[..., :-1, :], labels[..., 1:]
            if attention_mask is not None:
                keep = attention_mask[..., 1:]
                shift_logits = shift_logits[keep.to(logits.device) != 0]
                shift_labels = shift_labels[keep.to(labels.device) != 0]
            return F.cross_entropy(
                shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1).to(shift_logits.device)
            )

    class Qwen2AudioLTBMProcessor(MergeSettingProcessorMixin, Qwen2AudioProcessor):
        """`Qwen2AudioProcessor` that emits `output_length(N, ...)` `<|AUDIO|>` placeholders per clip.

        `N` is the clip's encoder token count (25 per second, at most 750 for the 30 s the encoder takes); a clip
        longer than 30 s raises a `ValueError` instead of being truncated. `input_features [num_clips, num_mel_bins,
        3000]` and `feature_attention_mask [num_clips, 3000]` are the upstream ones; with a merge setting only
        `input_ids` / `attention_mask` are shorter.

        Args:
            feature_extractor, tokenizer, chat_template, audio_token, audio_bos_token, audio_eos_token:
                as for `Qwen2AudioProcessor`.
            audio_token_merge (`str`, `dict` or `AudioTokenMergeConfig`, *optional*): the model's merge setting.
        """

        _upstream_class = Qwen2AudioProcessor

        def __init__(
            self,
            feature_extractor=None,
            tokenizer=None,
            chat_template=None,
            audio_token="<|AUDIO|>",
            audio_bos_token="<|audio_bos|>",
            audio_eos_token="<|audio_eos|>",
            audio_token_merge: MergeSetting = None,
        ):
            self._init_setting(audio_token_merge)
            super().__init__(
                feature_extractor,
                tokenizer,
                chat_template=chat_template,
                audio_token=audio_token,
                audio_bos_token=audio_bos_token,
                audio_eos_token=audio_eos_token,
            )

        def _process_audio(self, audio, **kwargs):
            audio = self.feature_extractor.fetch_audio(audio)
            clips = audio if isinstance(audio, (list, tuple)) else [audio]
            self.check_audio_lengths(
                [np.asarray(clip).shape[-1] for clip in clips], self.feature_extractor.sampling_rate
            )
            return super()._process_audio(audio, **kwargs)

        def _duration_limit(self) -> tuple[str, str]:
            return "Qwen2-Audio", "Cut it into clips of at most that length, each with its own audio placeholder."

        def replace_audio_token(self, audio_inputs: dict, audio_idx: int, **kwargs) -> str:
            """The placeholder run for clip `audio_idx`: `merged_length(N)` audio tokens, where `N` is its entry of
            `audio_inputs["num_audio_tokens"]` (`[num_clips]`, the unmerged counts)."""
            n = audio_inputs["num_audio_tokens"][audio_idx]
            return self.audio_token * self.merged_length(int(n))

    return BackboneClasses(Qwen2AudioLTBMModel, Qwen2AudioLTBMForConditionalGeneration, Qwen2AudioLTBMProcessor)


_TINY_CHAT_TEMPLATE = (
    "{% set n = namespace(audio=0) %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}{% set n.audio = n.audio + 1 %}"
    "Audio {{ n.audio }}: <|audio_bos|><|AUDIO|><|audio_eos|>{{ '\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)


@register_backbone
class Qwen2AudioBackbone(Backbone):
    """Qwen2-Audio (`Qwen/Qwen2-Audio-7B-Instruct`): one unit per clip."""

    model_type = "qwen2_audio"
    display_name = "Qwen2-Audio"
    default_checkpoint = "Qwen/Qwen2-Audio-7B-Instruct"
    class_prefix = "Qwen2Audio"
    config_name = "Qwen2AudioConfig"
    processor_name = "Qwen2AudioProcessor"
    feature_mask = "feature_attention_mask"
    extra_auto_classes = ("AutoModelForMultimodalLM",)
    required_hooks = (
        ("transformers", "Qwen2AudioModel"),
        ("transformers", "Qwen2AudioProcessor._process_audio"),
        ("transformers", "Qwen2AudioProcessor.replace_audio_token"),
    )
    vllm_architectures = ("Qwen2AudioForConditionalGeneration",)
    listing_order = 0
    tiny_encoder_type = "qwen2_audio_encoder"
    tiny_audio_tokens = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
    tiny_chat_template = _TINY_CHAT_TEMPLATE

    build = staticmethod(_build)

    def plain_prompt_audio(self, processor: Any) -> str:
        """`<|audio_bos|><|AUDIO|><|audio_eos|>`: Qwen2-Audio's processor expands the placeholder only."""
        return processor.audio_bos_token + processor.audio_token + processor.audio_eos_token


__getattr__ = class_getter(Qwen2AudioBackbone)  # the merging classes, made on first use
