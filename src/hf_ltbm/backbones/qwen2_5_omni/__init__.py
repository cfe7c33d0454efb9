"""Qwen2.5-Omni's thinker (text output): one merge per audio clip, with time-aligned multimodal rotary positions.

The thinker's audio encoder packs every clip's frames into one sequence (attention within 2 s chunks), pools them by
2 (25 tokens per second) and projects them (`ln_post`, `proj`) inside the encoder. Merging runs between the pooling
and that projection (`space="encoder"`), or on the projected tokens (`space="projector"`).

Positions. The language model rotates each token by a 3D position (time, height, width); an audio token's three are
its time in 40 ms steps from the start of its clip's run (`get_rope_index`), and the text after a clip starts after
its last frame. A merged token stands for several frames: it gets the **size-weighted mean position of its members,
rounded to the nearest step** (half up). The mean is the time whose rotation best matches the members' rotations for
small spreads; it equals a kept token's own position, so at keep ratio 1.0 every position is upstream's exactly.
Rounding keeps positions integers, as upstream's are (and as vLLM stores them). Text, images and videos keep the
positions upstream gives the unmerged prompt, so the positions after a merged clip keep meaning time and the prompt has
a gap where the dropped frames were (`rope_deltas`, used while decoding, records it). Upstream's positions are computed
on the unmerged prompt: a prompt from the merging processor has its runs expanded back to `N` placeholders first.

Audio that arrives with video (`use_audio_in_video=True`; `load_audio_from_video=True` for the processor on 5.20 and
later) is interleaved with the video's tokens by upstream, one `seconds_per_chunk` (2 s, 50 tokens) chunk of audio
after each chunk of frames. Such a clip is merged **chunk by chunk**: each chunk's tokens merge among themselves into
`merged_length(n)` tokens that stay between the frames they lie between, so the placeholder counts are known before
the encoder runs and the processor can emit them. Its merged tokens get the same time-aligned positions (the mean of
their members, which all lie in one chunk). A clip counts as arriving with video when its `<|audio_bos|>` is followed
by a video token, as upstream lays such clips out; clips on their own are merged whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..base import Backbone, BackboneClasses, class_getter, register_backbone
from ..tiny_parts import TinySpec, check_spec, tiny_audio_config, tiny_text_config, tiny_tokenizer, whisper_features

__all__ = [
    "Qwen2_5OmniBackbone",
    "Qwen2_5OmniThinkerLTBMForConditionalGeneration",
    "Qwen2_5OmniThinkerLTBMModel",
    "Qwen2_5OmniThinkerLTBMProcessor",
]


#: transformers' thinker base model (5.20 and later); 5.19's thinker is one flat class (`legacy.py`).
THINKER_MODEL = "Qwen2_5OmniThinkerModel"


def has_thinker_model() -> bool:
    """Whether the installed transformers has `THINKER_MODEL`: the one check of the two layouts (the declaration and
    `modeling` ask it), made on transformers' public names, so that no model code is imported to answer."""
    import transformers

    return THINKER_MODEL in dir(transformers)


def _build() -> BackboneClasses:
    """Makes Qwen2.5-Omni's merging classes (`Qwen2_5OmniBackbone.build`): over `Qwen2_5OmniThinkerModel` where
    transformers has it (5.20 and later), else over 5.19's flat thinker."""
    from .processing import Qwen2_5OmniThinkerLTBMProcessor

    if has_thinker_model():
        from . import modeling

        return BackboneClasses(
            modeling.Qwen2_5OmniThinkerLTBMModel,
            modeling.Qwen2_5OmniThinkerLTBMForConditionalGeneration,
            Qwen2_5OmniThinkerLTBMProcessor,
        )
    from .legacy import Qwen2_5OmniThinkerLTBMForConditionalGeneration

    return BackboneClasses(None, Qwen2_5OmniThinkerLTBMForConditionalGeneration, Qwen2_5OmniThinkerLTBMProcessor)


_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif part['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)
_TINY_NAMED_TOKENS = {
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}


@register_backbone
class Qwen2_5OmniBackbone(Backbone):
    """Qwen2.5-Omni's thinker (`Qwen/Qwen2.5-Omni-7B`, text output): one unit per clip, 25 tokens per second."""

    model_type = "qwen2_5_omni_thinker"
    display_name = "Qwen2.5-Omni"
    default_checkpoint = "Qwen/Qwen2.5-Omni-7B"
    class_prefix = "Qwen2_5OmniThinker"
    config_name = "Qwen2_5OmniThinkerConfig"
    processor_name = "Qwen2_5OmniProcessor"
    feature_mask = "feature_attention_mask"
    extra_auto_classes = ("AutoModelForImageTextToText",)
    checkpoint_model_types = ("qwen2_5_omni",)
    required_hooks = (
        ("transformers", "Qwen2_5OmniThinkerForConditionalGeneration"),
        (
            "transformers.models.qwen2_5_omni.modeling_qwen2_5_omni",
            "Qwen2_5OmniPreTrainedModelForConditionalGeneration.get_rope_index",
        ),
        ("transformers", "Qwen2_5OmniProcessor"),
    )
    # Qwen2.5-Omni's releases name the whole model (thinker, talker, vocoder); vLLM serves its thinker for both
    vllm_architectures = ("Qwen2_5OmniModel", "Qwen2_5OmniForConditionalGeneration")
    tiny_encoder_type = "qwen2_5_omni_audio_encoder"
    tiny_audio_tokens = tuple(_TINY_NAMED_TOKENS.values())
    tiny_chat_template = _TINY_CHAT_TEMPLATE

    build = staticmethod(_build)

    def has_base_model(self) -> bool:
        """transformers 5.19's thinker is one flat class: no base model there (`has_thinker_model`)."""
        return has_thinker_model()

    def plain_prompt_audio(self, processor: Any) -> str:
        """`<|audio_bos|><|AUDIO|><|audio_eos|>`: the processor expands the placeholder only."""
        return processor.audio_bos_token + processor.audio_token + processor.audio_eos_token

    def tiny_processor_parts(self, spec: TinySpec) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Qwen2-VL's image processor (the PIL one where transformers has it), a `BaseVideoProcessor` stand-in, Whisper
        features (16 kHz, `spec`'s mel bins and window: 128, 30 s) and the tiny tokenizer with Qwen2.5-Omni's named
        special tokens. The upstream processor (`upstream=True`) checks its video processor's class, which needs
        torchvision (`tests/encoding.py` has a stand-in for tests without it)."""
        import transformers
        from transformers.video_processing_utils import BaseVideoProcessor

        images = (getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor)()
        videos = BaseVideoProcessor(merge_size=2, temporal_patch_size=2)
        tokenizer = tiny_tokenizer(list(self.tiny_audio_tokens), named=_TINY_NAMED_TOKENS)
        return (images, videos, whisper_features(spec), tokenizer), {"chat_template": self.tiny_chat_template}

    def tiny_config(self, processor: Any = None, spec: Optional[TinySpec] = None, **config_kwargs: Any) -> Any:
        """The thinker with tiny widths: Qwen2.5-Omni's audio encoder (2 s attention chunks), a one-block vision
        encoder half as wide as the language model and a language model whose rotary sections cover its head size
        (`[4, 6, 6]` for the default head size 32); the vocabulary and ids of `processor`'s tokenizer (`None`: the tiny
        processor of `spec`); `config_kwargs` override the config's arguments (token ids)."""
        spec = check_spec(spec)
        half = spec.head_size // 2  # rotary frequencies per head, split over time, height and width
        spatial = 3 * half // 8
        if spatial < 1:
            raise ValueError(
                "Qwen2.5-Omni's tiny model needs a head size (hidden_size / num_attention_heads) of at least 6 for "
                f"its 3D rotary sections, got {spec.head_size}."
            )
        processor = processor if processor is not None else self.tiny_processor(None, spec)
        tokenizer = processor.tokenizer
        audio = tiny_audio_config(self.tiny_encoder_type, spec)
        audio.update(n_window=100, output_dim=spec.hidden_size)
        text = tiny_text_config(tokenizer, spec)
        sections = [half - 2 * spatial, spatial, spatial]
        text.update(model_type="qwen2_5_omni_text", rope_scaling={"rope_type": "default", "mrope_section": sections})
        ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _TINY_NAMED_TOKENS.items()}
        kwargs = dict(
            audio_token_index=ids["audio_token"],
            image_token_index=ids["image_token"],
            video_token_index=ids["video_token"],
            audio_start_token_id=ids["audio_bos_token"],
            audio_end_token_id=ids["audio_eos_token"],
        )
        vision_start = config_kwargs.pop("vision_start_token_id", ids["vision_bos_token"])
        config = self.config_class(
            audio_config=audio,
            vision_config=dict(
                depth=1,
                hidden_size=spec.hidden_size // 2,
                intermediate_size=spec.hidden_size,
                num_heads=2,
                out_hidden_size=spec.hidden_size,
                fullatt_block_indexes=[0],
            ),
            text_config=text,
            **{**kwargs, **config_kwargs},
        )
        config.vision_start_token_id = vision_start  # read by get_rope_index, not a declared field
        return config

    def save_tiny(self, model: Any, processor: Any, folder: Path) -> None:
        """A released Qwen2.5-Omni checkpoint is the whole model (`qwen2_5_omni`: thinker, talker, vocoder), and so is
        the tiny model's folder: a `Qwen2_5OmniConfig` holding the thinker's config (no talker or vocoder:
        `enable_audio_output=False`; the merge setting, if any, also at the top, where vLLM reads it), the thinker's
        weights under `thinker.` (named as its own `save_pretrained` names them), an empty speaker list
        (`spk_dict.pt`, which upstream's whole model reads) and the processor."""
        import tempfile

        import torch
        from safetensors.torch import load_file, save_file
        from transformers import Qwen2_5OmniConfig

        folder = Path(folder)
        with tempfile.TemporaryDirectory() as thinker:
            model.save_pretrained(thinker)
            weights = load_file(str(Path(thinker) / "model.safetensors"))
        weights = {f"thinker.{name}": value for name, value in weights.items()}
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        config = Qwen2_5OmniConfig(thinker_config=model.config.to_dict(), enable_audio_output=False)
        config.architectures = ["Qwen2_5OmniForConditionalGeneration"]
        setting = getattr(model.config, "audio_token_merge", None)
        if setting is not None:
            config.audio_token_merge = setting
        config.save_pretrained(folder)
        torch.save({}, folder / "spk_dict.pt")
        processor.save_pretrained(folder)


__getattr__ = class_getter(Qwen2_5OmniBackbone)  # the merging classes, made on first use
