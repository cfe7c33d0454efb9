"""The backbone declaration: everything specific to an audio-language model family, declared once.

A family is one module of `hf_ltbm.backbones` (a package for Qwen2.5-Omni) holding a `Backbone` subclass, registered
with `@register_backbone`. The declaration is plain data and cheap to import (no torch, no transformers model code);
the family's transformers classes (the merging models and processor) are made by its `build()` the first time one is
used. Everything that lists backbones reads the registry: the Auto classes, the top-level exports, the tiny models,
the CLI, the vLLM plugin's architectures, the lmms-eval models and the tests.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Optional

from ..layout import UnitLayout
from .tiny_parts import TinySpec, check_spec, tiny_audio_config, tiny_text_config, tiny_tokenizer, whisper_features

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneClasses",
    "backbone_for",
    "class_getter",
    "get_backbone",
    "register_backbone",
]

#: The roles of a family's merging classes and the suffix of each one's name (`Qwen2Audio` + `LTBMModel`).
_ROLES = {"base_model": "LTBMModel", "generation_model": "LTBMForConditionalGeneration", "processor": "LTBMProcessor"}


class BackboneClasses(NamedTuple):
    """A family's merging classes, made by `Backbone.build()`.

    Attributes:
        base_model: the `*LTBMModel` (`None` where the upstream family has no base model: Qwen2.5-Omni's thinker on
            transformers 5.19).
        generation_model: the `*LTBMForConditionalGeneration`.
        processor: the `*LTBMProcessor`.
    """

    base_model: Optional[type]
    generation_model: type
    processor: type


class Backbone:
    """One audio-language model family. Subclasses set the class attributes, implement `build()` and override the
    methods whose default does not fit; `register_backbone` makes it known to the rest of hf-ltbm.

    Attributes:
        model_type: the family's `config.model_type` (`"qwen2_audio"`).
        display_name: its name in messages (`"Qwen2-Audio"`).
        default_checkpoint: the released checkpoint examples and the lmms-eval model load by default.
        class_prefix: the merging classes are `{class_prefix}LTBMModel`, `...LTBMForConditionalGeneration` and
            `...LTBMProcessor` (`"Qwen2Audio"`).
        config_name, processor_name: the names of the upstream config and processor classes in `transformers`.
        feature_mask: the name of the processor's per-unit mel-frame mask (`"feature_attention_mask"`), `None` where
            the processor returns none (Voxtral: every unit is a whole 30 s chunk).
        extra_auto_classes: names of transformers Auto classes beyond `AutoModelForSeq2SeqLM` and
            `AutoModelForPreTraining` that map the family's config to its generation model upstream.
        checkpoint_model_types: model types of whole checkpoints that hold this family's model, which its
            generation model's `from_pretrained` loads (`"qwen2_5_omni"`: the thinker of a Qwen2.5-Omni checkpoint).
        required_hooks: what the family binds to in transformers, as `(module, dotted attribute path)`; checked when
            its classes are first made (a release without one raises an `ImportError` naming it).
        vllm_architectures: the vLLM architecture names the vLLM plugin serves with this family's merging class
            (`{class_prefix}LTBMForConditionalGeneration` in `hf_ltbm.integrations.vllm.<family module>`).
        chat_only: whether prompts can only be built from chats by the processor (`encode_chats`), never from text
            holding audio placeholders (Voxtral: mistral-common writes the placeholders and its `__call__` refuses
            them).
        mel_frames_per_token: mel frames (10 ms each) per audio token: 4 for the Whisper-style encoders (25 tokens
            per second), 8 for Voxtral.
        unit_seconds: seconds of audio per unit; `None` (the default): the feature extractor's window (30 s).
        max_units: the units a clip keeps at most: `1` (the default) makes a clip one unit of at most one window;
            `None` takes any number (Voxtral's chunks).
        max_seconds_attribute: the processor attribute that holds the longest audio it takes, in seconds
            (`"max_audio_len"` for Audio Flamingo 3 and GLM-ASR); where set, a clip keeps its first
            `floor(value / unit_seconds)` units instead of `max_units` (upstream cuts the rest off).
        stacked_frames: encoder output frames the projector reads as one token, concatenated (Voxtral and GLM-ASR: 4,
            a token of 80 ms); `1` (the default): one encoder frame per token (the Whisper-style encoders that pool
            their own output to 40 ms). The merge runs on the stacked tokens, and the encoder keys and scores are
            pooled to them.
        whole_units: whether every unit is encoded whole, padding included (Voxtral), rather than only its valid
            mel frames.
        attention_scores_unavailable: why the attention scores of the audio encoder's last layer cannot be read
            (settings that need them, `prune_attention`, are refused with it, `check_setting`), `None` where they can.
        tiny_encoder_type: `model_type` of the tiny model's audio-encoder config.
        tiny_audio_tokens: the special tokens its processor uses around audio (the first is the placeholder).
        tiny_chat_template: a chat template in the family's format for the tiny processor.
        task_prompts: the prompts the family's checkpoints were trained with for a kind of task, where they differ
            from the evaluation task's default (`{"asr": "Transcribe the input speech."}` for Audio Flamingo 3).
        listing_order: where the family comes in listings (the paper's two backbones first); ties go by model type.
    """

    model_type: ClassVar[str]
    display_name: ClassVar[str]
    default_checkpoint: ClassVar[str]
    class_prefix: ClassVar[str]
    config_name: ClassVar[str]
    processor_name: ClassVar[str]
    feature_mask: ClassVar[Optional[str]]
    extra_auto_classes: ClassVar[tuple[str, ...]] = ()
    checkpoint_model_types: ClassVar[tuple[str, ...]] = ()
    required_hooks: ClassVar[tuple[tuple[str, str], ...]] = ()
    vllm_architectures: ClassVar[tuple[str, ...]] = ()
    chat_only: ClassVar[bool] = False
    mel_frames_per_token: ClassVar[int] = 4
    unit_seconds: ClassVar[Optional[float]] = None
    max_units: ClassVar[Optional[int]] = 1
    max_seconds_attribute: ClassVar[Optional[str]] = None
    stacked_frames: ClassVar[int] = 1
    whole_units: ClassVar[bool] = False
    attention_scores_unavailable: ClassVar[Optional[str]] = None
    tiny_encoder_type: ClassVar[str]
    tiny_audio_tokens: ClassVar[tuple[str, ...]]
    tiny_chat_template: ClassVar[str]
    task_prompts: ClassVar[dict[str, str]] = {}
    listing_order: ClassVar[int] = 100

    # ------------------------------------------------------------------------------------------------ derived names
    @property
    def family_module(self) -> str:
        """The name of the family's module in `hf_ltbm.backbones` (`"qwen2_audio"`)."""
        return type(self).__module__.split(".")[2]

    @property
    def class_names(self) -> dict[str, str]:
        """Role (`"base_model"`, `"generation_model"`, `"processor"`) -> the merging class's name."""
        return {role: self.class_prefix + suffix for role, suffix in _ROLES.items()}

    @property
    def tiny_name(self) -> str:
        """The name of its tiny random model (`hf_ltbm.tiny`, `hf-ltbm demo --model`): `tiny-random-qwen2-audio`."""
        return "tiny-random-" + self.family_module.replace("_", "-")

    @property
    def lmms_eval_id(self) -> str:
        """Its lmms-eval model id (`--model hf_ltbm_qwen2_audio`)."""
        return "hf_ltbm_" + self.family_module

    @property
    def vllm_class(self) -> str:
        """`"module:Class"` of the vLLM plugin's merging class (what vLLM's model registry imports lazily)."""
        return f"hf_ltbm.integrations.vllm.{self.family_module}:{self.class_names['generation_model']}"

    @property
    def token_ms(self) -> int:
        """Milliseconds of audio per encoder token (40 for 25 tokens per second)."""
        return 10 * self.mel_frames_per_token

    # ------------------------------------------------------------------------------------------- upstream classes
    @property
    def config_class(self) -> type:
        """The upstream config class (`transformers.Qwen2AudioConfig`)."""
        return getattr(importlib.import_module("transformers"), self.config_name)

    @property
    def upstream_processor(self) -> type:
        """The upstream processor class (`transformers.Qwen2AudioProcessor`)."""
        return getattr(importlib.import_module("transformers"), self.processor_name)

    # ----------------------------------------------------------------------------------------------- merging classes
    def build(self) -> BackboneClasses:
        """Makes the family's merging classes (imports transformers' model code). Called once, by `classes`."""
        raise NotImplementedError(f"{type(self).__name__} must implement build().")

    @functools.cached_property
    def classes(self) -> BackboneClasses:
        """The family's merging classes, made on first use after checking `required_hooks`; each model class gets
        the declared `feature_mask` as its `_audio_mask_name` and its upstream class's checkpoint conversion
        mapping."""
        from ..compat import check_requirements, register_conversion

        check_requirements(self.required_hooks)
        classes = self.build()
        for role, name in self.class_names.items():
            cls = getattr(classes, role)
            if cls is not None:
                if cls.__name__ != name:
                    raise TypeError(
                        f"{type(self).__name__}.build() made {cls.__name__} as its {role}; expected {name}."
                    )
                cls.__qualname__ = name  # made inside build(): pickled by module and name
                cls.__module__ = type(self).__module__
                cls._backbone = self
        for model in (classes.base_model, classes.generation_model):
            if model is not None:
                model._audio_mask_name = self.feature_mask  # the argument name, declared once
                register_conversion(model, self.model_type)
        return classes

    def has_base_model(self) -> bool:
        """Whether the family has a base model (`*LTBMModel`) with the installed transformers, known without making
        the classes. Default: yes."""
        return True

    @property
    def base_model(self) -> Optional[type]:
        return self.classes.base_model

    @property
    def generation_model(self) -> type:
        return self.classes.generation_model

    @property
    def processor(self) -> type:
        return self.classes.processor

    def exported(self, name: str) -> Any:
        """The merging class called `name` (the family module's and `hf_ltbm`'s lazy attributes)."""
        for role, class_name in self.class_names.items():
            if class_name == name:
                return getattr(self.classes, role)  # `None` where the release has no such upstream class
        raise AttributeError(name)

    # ---------------------------------------------------------------------------------------------- the unit layout
    def unit_layout(self, processor: Any) -> UnitLayout:
        """How a clip becomes units and encoder tokens with `processor` (any processor whose `feature_extractor` has
        a `sampling_rate`: stock, merging, or vLLM's): the declared `unit_seconds` (else the extractor's
        `chunk_length`), `max_units` (or what `max_seconds_attribute` allows: upstream keeps the first
        `floor(max_audio_len / unit_seconds)` units, so a limit that is not a whole number of units keeps less than it
        says), `whole_units` and `mel_frames_per_token`. The transformers processor, the model and the vLLM processor
        all count with it."""
        extractor = processor.feature_extractor
        unit_seconds = self.unit_seconds if self.unit_seconds is not None else extractor.chunk_length
        max_units = self.max_units
        if self.max_seconds_attribute is not None:
            max_units = int(getattr(processor, self.max_seconds_attribute) // unit_seconds)
        return UnitLayout(
            sampling_rate=int(extractor.sampling_rate),
            unit_seconds=unit_seconds,
            max_units=max_units,
            whole_units=self.whole_units,
            frames_per_token=self.mel_frames_per_token,
        )

    def units_per_clip(self, processor: Any, num_samples: list[int]) -> list[int]:
        """How many audio-encoder units (rows of `input_features`) each clip of `num_samples[i]` samples becomes
        with `processor` (`unit_layout`)."""
        layout = self.unit_layout(processor)
        return [layout.units(n) for n in num_samples]

    def max_audio_seconds(self, processor: Any) -> float:
        """The longest clip `processor`'s backbone takes whole (`unit_layout`; one 30 s window by default)."""
        return self.unit_layout(processor).max_seconds

    def check_setting(self, setting: Any) -> None:
        """Raises a `ValueError` naming `setting` (an `AudioTokenMergeConfig`, or `None`) and the reason where this
        family cannot serve it, in transformers and in vLLM alike (`attention_scores_unavailable`)."""
        if setting is not None and setting.requires_scores and self.attention_scores_unavailable is not None:
            raise ValueError(
                f"audio_token_merge={setting} reads the attention scores of the audio encoder's last layer, but "
                f"{self.attention_scores_unavailable}; use a method that needs no scores."
            )

    # ------------------------------------------------------------------------------------------- prompts and inputs
    def build_prompt(self, processor: Any, text: str, num_audio: int = 1) -> str:
        """The model prompt for an instruction `text` about `num_audio` clips (see `hf_ltbm.build_prompt`).

        Raises:
            ValueError: for a `chat_only` backbone; the message names the chat route.
        """
        if self.chat_only:
            raise ValueError(
                f"build_prompt cannot write a {self.display_name} prompt: its processor takes audio only from a chat "
                "(the audio placeholders are written by the processor itself, and text holding them is refused). "
                "Use the chat route instead: processor.apply_chat_template([{'role': 'user', 'content': [{'type': "
                "'audio', 'path': 'clip.wav'}, {'type': 'text', 'text': ...}]}], tokenize=True, return_dict=True, "
                "return_tensors='pt') (audio as a 'path', 'url' or 'base64'; a path or url needs librosa on older "
                "transformers releases), or pipeline('audio-text-to-text', ...), which also takes waveforms, with "
                "`text=` or a chat."
            )
        if processor.audio_token in text:
            return text
        parts = [{"type": "audio"} for _ in range(num_audio)] + [{"type": "text", "text": text}]
        if getattr(processor, "chat_template", None) is not None:
            return processor.apply_chat_template(
                [{"role": "user", "content": parts}], tokenize=False, add_generation_prompt=True
            )
        return self.plain_prompt_audio(processor) * num_audio + text

    def plain_prompt_audio(self, processor: Any) -> str:
        """What one clip is in a prompt written without a chat template. Default: the audio placeholder (processors
        that wrap it in markers, such as Music Flamingo's, add them themselves)."""
        return processor.audio_token

    def encode_audio(self, processor: Any, audio: Any, text: Optional[str] = None) -> Any:
        """The processor's inputs for one clip (a waveform at its sampling rate) and an instruction `text` (`None`:
        the clip alone), as a one-turn chat for a `chat_only` backbone, else as `build_prompt` writes it."""
        rate = processor.feature_extractor.sampling_rate
        if self.chat_only:
            parts = [{"type": "audio", "audio": audio}] + ([] if text is None else [{"type": "text", "text": text}])
            return self.encode_chats(processor, [[{"role": "user", "content": parts}]], rate)
        prompt = processor.audio_token if text is None else self.build_prompt(processor, text)
        return processor(text=prompt, audio=[audio], sampling_rate=rate, return_tensors="pt")

    def encode_chats(self, processor: Any, conversations: list[list[dict]], sampling_rate: int) -> Any:
        """Model inputs for a batch of chats whose audio parts hold waveforms (`{"type": "audio", "audio": array}`),
        left-padded, for a `chat_only` backbone."""
        raise NotImplementedError(f"{type(self).__name__} builds prompts from text; it has no encode_chats.")

    def audio_features(self, model: Any, inputs: Any) -> Any:
        """`model.get_audio_features` on a processor's output `inputs` (features and the per-unit mask, moved to the
        model's device and dtype), with the arguments this family's upstream method takes."""
        features = inputs["input_features"].to(model.device, model.dtype)
        if self.feature_mask is None:
            return model.get_audio_features(features)
        return model.get_audio_features(features, inputs[self.feature_mask].to(model.device))

    # --------------------------------------------------------------------------------------------------- tiny model
    def tiny_processor(
        self,
        audio_token_merge: Any,
        spec: Optional[TinySpec] = None,
        *,
        upstream: bool = False,
        **processor_kwargs: Any,
    ) -> Any:
        """The processor of the family's tiny model (`hf_ltbm.tiny.build_tiny_processor`): Whisper features at 16 kHz
        of `spec`'s mel bins and window (128, 30 s), an in-process word-level tokenizer with `tiny_audio_tokens` and
        `tiny_chat_template`.

        Args:
            audio_token_merge: the merging processor's setting (`None`: none).
            spec: the tiny model's sizes (`None`: the default `TinySpec()`).
            upstream: the upstream processor class (`Qwen2AudioProcessor`) instead of the merging one; it takes no
                `audio_token_merge`.
            processor_kwargs: more arguments of the processor's `__init__` (`max_audio_len=6` for Audio Flamingo 3).
        """
        args, kwargs = self.tiny_processor_parts(check_spec(spec))
        if upstream:
            if audio_token_merge is not None:
                raise ValueError(
                    "`audio_token_merge` must be None for the upstream processor (upstream=True), got "
                    f"{audio_token_merge!r}."
                )
            return self.upstream_processor(*args, **kwargs, **processor_kwargs)
        return self.processor(*args, **kwargs, audio_token_merge=audio_token_merge, **processor_kwargs)

    def tiny_processor_parts(self, spec: TinySpec) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """`(args, kwargs)` of the tiny processor's `__init__` for `spec` (checked), whichever class `tiny_processor`
        makes. Default: Whisper features and the word-level tokenizer with `tiny_audio_tokens`, and
        `tiny_chat_template`."""
        tokenizer = tiny_tokenizer(list(self.tiny_audio_tokens))
        return (whisper_features(spec), tokenizer), {"chat_template": self.tiny_chat_template}

    def tiny_config(self, processor: Any = None, spec: Optional[TinySpec] = None, **config_kwargs: Any) -> Any:
        """The tiny model's config (the upstream config class) for `processor`'s tokenizer (`None`: the tiny
        processor of `spec`): `spec`'s sizes (`None`: the default `TinySpec()`), the real audio front end;
        `config_kwargs` override its arguments (token ids)."""
        spec = check_spec(spec)
        processor = processor if processor is not None else self.tiny_processor(None, spec)
        tokenizer = processor.tokenizer
        kwargs = {
            "audio_token_id": tokenizer.convert_tokens_to_ids(processor.audio_token),
            **self.tiny_config_kwargs(tokenizer),
            **config_kwargs,
        }
        return self.config_class(
            audio_config=tiny_audio_config(self.tiny_encoder_type, spec),
            text_config=tiny_text_config(tokenizer, spec),
            **kwargs,
        )

    def tiny_config_kwargs(self, tokenizer: Any) -> dict[str, Any]:
        """Config arguments of the tiny model beyond the audio / text configs and `audio_token_id` (token ids of the
        family's other audio markers in the tiny tokenizer). Default: none."""
        return {}

    def save_tiny(self, model: Any, processor: Any, folder: Path) -> None:
        """Writes a tiny model and its processor to `folder` as the family's released checkpoints are laid out
        (`hf_ltbm.tiny.save_tiny_model`). Default: `model.save_pretrained` and `processor.save_pretrained`."""
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_type={self.model_type!r})"


BACKBONES: dict[str, Backbone] = {}
"""`config.model_type` -> the registered `Backbone` (in listing order once `hf_ltbm.backbones` is imported)."""


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: registers a `Backbone` subclass under its `model_type` (once)."""
    if cls.model_type in BACKBONES and type(BACKBONES[cls.model_type]) is not cls:
        raise ValueError(f"A backbone is already registered for model_type {cls.model_type!r}.")
    BACKBONES[cls.model_type] = cls()
    return cls


def class_getter(cls: type[Backbone]) -> Callable[[str], Any]:
    """The module `__getattr__` of a family module: its merging classes by name, made on first use."""

    def __getattr__(name: str) -> Any:
        return BACKBONES[cls.model_type].exported(name)

    return __getattr__


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
    """The backbone of a processor, model or config (stock or merging), or `None` when it is none of them. Decided
    by class names and `model_type`, so no family's classes are made to answer."""
    names = {cls.__name__ for cls in type(obj).__mro__}
    for backbone in BACKBONES.values():
        if backbone.processor_name in names or backbone.config_name in names:
            return backbone
    model_type = getattr(getattr(obj, "config", None), "model_type", None)
    return BACKBONES.get(model_type) if model_type is not None else None
