"""The backbone adapter: what differs between audio-language model families, declared once per family.

A backbone file (`backbones/qwen2_audio.py`, `backbones/audioflamingo3.py`) holds the family's merging model classes
(thin subclasses of the upstream classes and the shared mixins in `hf_ltbm.models.mixin`), its merging processor (a
subclass of the upstream processor and `hf_ltbm.processing.MergeSettingProcessorMixin`) and a `Backbone` subclass that
declares the rest: the upstream classes, how a clip is cut into audio-encoder units, the longest audio it takes, the
Auto classes it registers with and the pieces of its tiny random model. Everything shared (merging, compaction,
generation, saving, the pipeline, the CLI, the evaluation harness) reads these declarations from the registry.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

__all__ = ["BACKBONES", "Backbone", "backbone_for", "get_backbone", "register_backbone"]


class Backbone:
    """One audio-language model family. Subclasses set the class attributes and override the methods whose default
    does not fit; `register_backbone` makes it known to the rest of hf-ltbm.

    Attributes:
        model_type: the family's `config.model_type` (`"qwen2_audio"`).
        display_name: its name in messages (`"Qwen2-Audio"`).
        config_class, upstream_processor: the transformers config and processor classes.
        base_model, generation_model, processor: the merging classes (`*LTBMModel`,
            `*LTBMForConditionalGeneration`, `*LTBMProcessor`); `base_model` is `None` where the upstream family
            has no base model (Qwen2.5-Omni's thinker on transformers 5.19).
        extra_auto_classes: names of transformers Auto classes beyond `AutoModelForSeq2SeqLM` and
            `AutoModelForPreTraining` that map the family's config to its generation model upstream.
        checkpoint_model_types: model types of whole checkpoints that hold this family's model, which its
            generation model's `from_pretrained` loads (`"qwen2_5_omni"`: the thinker of a Qwen2.5-Omni checkpoint).
        tiny_name: the name of its tiny random model (`hf_ltbm.tiny`, `hf-ltbm demo --model`).
        tiny_encoder_type: `model_type` of its audio encoder's config.
        tiny_audio_tokens: the special tokens its processor uses around audio (the first is the placeholder).
        tiny_chat_template: a chat template in the family's format for the tiny processor.
    """

    model_type: ClassVar[str]
    display_name: ClassVar[str]
    config_class: ClassVar[type]
    upstream_processor: ClassVar[type]
    base_model: ClassVar[Optional[type]]
    generation_model: ClassVar[type]
    processor: ClassVar[type]
    extra_auto_classes: ClassVar[tuple[str, ...]] = ()
    checkpoint_model_types: ClassVar[tuple[str, ...]] = ()
    tiny_name: ClassVar[str]
    tiny_encoder_type: ClassVar[str]
    tiny_audio_tokens: ClassVar[tuple[str, ...]]
    tiny_chat_template: ClassVar[str]
    #: Whether prompts can only be built from chats by the processor (`encode_chats`), never from text holding audio
    #: placeholders (Voxtral: mistral-common writes the placeholders and its `__call__` refuses them).
    chat_only: ClassVar[bool] = False
    #: Mel frames (10 ms each) per audio token: 4 for the Whisper-style encoders (25 tokens/s), 8 for Voxtral.
    mel_frames_per_token: ClassVar[int] = 4

    def units_per_clip(self, processor: Any, num_samples: list[int]) -> list[int]:
        """How many audio-encoder units (rows of `input_features`) each clip of `num_samples[i]` samples becomes
        with `processor` (stock or merging). Default: one unit per clip."""
        return [1 for _ in num_samples]

    def max_audio_seconds(self, processor: Any) -> float:
        """The longest clip `processor`'s backbone takes whole. Default: the feature extractor's window (30 s)."""
        extractor = processor.feature_extractor
        return extractor.n_samples / extractor.sampling_rate

    def encode_audio(self, processor: Any, audio: Any, text: Optional[str] = None) -> Any:
        """The processor's inputs for one clip (a waveform at its sampling rate) and an instruction `text` (`None`:
        the clip alone), as a one-turn chat for a `chat_only` backbone, else as `hf_ltbm.build_prompt` writes it."""
        rate = processor.feature_extractor.sampling_rate
        if self.chat_only:
            parts = [{"type": "audio", "audio": audio}] + ([] if text is None else [{"type": "text", "text": text}])
            return self.encode_chats(processor, [[{"role": "user", "content": parts}]], rate)
        from ..pipeline import build_prompt

        prompt = processor.audio_token if text is None else build_prompt(processor, text)
        return processor(text=prompt, audio=[audio], sampling_rate=rate, return_tensors="pt")

    def audio_features(self, model: Any, inputs: Any) -> Any:
        """`model.get_audio_features` on a processor's output `inputs` (features and the per-unit mask, moved to the
        model's device and dtype), with the arguments this family's upstream method takes."""
        mask_name = model._audio_mask_name
        features = inputs["input_features"].to(model.device, model.dtype)
        return model.get_audio_features(features, inputs[mask_name].to(model.device))

    def plain_prompt_audio(self, processor: Any) -> str:
        """What one clip is in a prompt written without a chat template. Default: the audio placeholder (processors
        that wrap it in markers, such as Music Flamingo's, add them themselves)."""
        return processor.audio_token

    def encode_chats(self, processor: Any, conversations: list[list[dict]], sampling_rate: int) -> Any:
        """Model inputs for a batch of chats whose audio parts hold waveforms (`{"type": "audio", "audio": array}`),
        left-padded, for a `chat_only` backbone."""
        raise NotImplementedError(f"{type(self).__name__} builds prompts from text; it has no encode_chats.")

    def tiny_processor(self, audio_token_merge: Any) -> Any:
        """The merging processor of the family's tiny model: Whisper features at 16 kHz, 128 mel bins, 30 s windows,
        an in-process word-level tokenizer with `tiny_audio_tokens` and `tiny_chat_template`."""
        from transformers import WhisperFeatureExtractor

        from ..tiny import tiny_tokenizer

        features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=30)
        tokenizer = tiny_tokenizer(list(self.tiny_audio_tokens))
        return self.processor(
            features, tokenizer, chat_template=self.tiny_chat_template, audio_token_merge=audio_token_merge
        )

    def tiny_config(self, processor: Any) -> Any:
        """The tiny model's config for `processor`'s tokenizer: tiny widths, the real audio front end."""
        from ..tiny import tiny_audio_config, tiny_text_config

        tokenizer = processor.tokenizer
        return self.config_class(
            audio_config=tiny_audio_config(self.tiny_encoder_type),
            text_config=tiny_text_config(tokenizer),
            audio_token_id=tokenizer.convert_tokens_to_ids(processor.audio_token),
            **self.tiny_config_kwargs(tokenizer),
        )

    def tiny_config_kwargs(self, tokenizer: Any) -> dict[str, Any]:
        """Config arguments of the tiny model beyond the audio / text configs and `audio_token_id` (token ids of the
        family's other audio markers in the tiny tokenizer). Default: none."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_type={self.model_type!r})"


BACKBONES: dict[str, Backbone] = {}
"""`config.model_type` -> the registered `Backbone` (in registration order)."""


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: registers a `Backbone` subclass under its `model_type` (once)."""
    if cls.model_type in BACKBONES and type(BACKBONES[cls.model_type]) is not cls:
        raise ValueError(f"A backbone is already registered for model_type {cls.model_type!r}.")
    BACKBONES[cls.model_type] = cls()
    return cls


def get_backbone(model_type: str) -> Backbone:
    """The backbone registered for `model_type` (or whose `checkpoint_model_types` hold it); a `ValueError` lists the
    supported ones otherwise."""
    for backbone in BACKBONES.values():
        if model_type in backbone.checkpoint_model_types:
            return backbone
    if model_type not in BACKBONES:
        raise ValueError(f"hf-ltbm has no backbone for model_type {model_type!r}; supported: {', '.join(BACKBONES)}.")
    return BACKBONES[model_type]


def backbone_for(obj: Any) -> Optional[Backbone]:
    """The backbone of a processor, model or config (stock or merging), or `None` when it is none of them."""
    for backbone in BACKBONES.values():
        if isinstance(obj, (backbone.upstream_processor, backbone.config_class)):
            return backbone
    model_type = getattr(getattr(obj, "config", None), "model_type", None)
    return BACKBONES.get(model_type) if model_type is not None else None
