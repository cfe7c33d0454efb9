"""Registers every backbone's merging classes (`hf_ltbm.backbones.BACKBONES`) with transformers' Auto classes on
`import hf_ltbm` (idempotent).

- `AutoModel` -> `*LTBMModel`; `AutoModelForSeq2SeqLM`, `AutoModelForPreTraining` and the backbone's
  `extra_auto_classes` (`AutoModelForMultimodalLM` for Qwen2-Audio) -> `*LTBMForConditionalGeneration`. With no
  merge setting these are bit-identical to the upstream classes, so the replacement is invisible until
  `audio_token_merge=...` is passed.
- The checkpoint conversion mapping of each merging class: transformers treats registered subclasses as custom code
  and would otherwise skip the key renaming of native checkpoints (`lm_head` would silently load random weights).
- `AutoProcessor` -> `*LTBMProcessor`, and `AutoProcessor.from_pretrained(path, audio_token_merge=...)` returns the
  merging processor even for a folder saved by the upstream processor. A folder saved by a merging processor names
  the upstream class (plain transformers loads it as such) and holds `audio_token_merge`: `AutoProcessor` returns the
  merging processor with that setting.
"""

from __future__ import annotations

import functools

import transformers
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSeq2SeqLM, AutoProcessor

from .backbones import BACKBONES
from .compat import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from .config import MergeSetting, plain_setting
from .pipeline import register_pipeline

__all__ = ["register"]

_SENTINEL = object()


def _processors() -> dict[type, type]:
    """Upstream processor class -> the merging one, for every backbone."""
    return {backbone.upstream_processor: backbone.processor for backbone in BACKBONES.values()}


def _register_conversion(cls, model_type: str) -> None:
    """Gives `cls` the conversion mapping its upstream class gets (by class name, else by model type)."""
    mapping = get_checkpoint_conversion_mapping(cls._upstream_class.__name__)
    if mapping is None:
        mapping = get_checkpoint_conversion_mapping(model_type)
    if mapping is not None:
        register_checkpoint_conversion_mapping(cls.__name__, mapping, overwrite=True)


def _saved_setting(processor_class: type, pretrained_model_name_or_path, kwargs: dict) -> MergeSetting:
    """The `audio_token_merge` a folder's `processor_config.json` holds (`None` when it has none)."""
    processor_dict, _ = processor_class.get_processor_dict(pretrained_model_name_or_path, **dict(kwargs))
    return processor_dict.get("audio_token_merge")


def _merging_processor_from_pretrained(original):
    @functools.wraps(original)
    def from_pretrained(pretrained_model_name_or_path, *args, audio_token_merge=_SENTINEL, **kwargs):
        processor = original(pretrained_model_name_or_path, *args, **kwargs)
        processors = _processors()
        target = processors.get(type(processor))
        if audio_token_merge is _SENTINEL:
            # A folder saved by a merging processor names the upstream class (so that plain transformers loads it);
            # its merge setting makes it the merging processor again.
            if target is None or _saved_setting(target, pretrained_model_name_or_path, kwargs) is None:
                return processor
            return target.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if target is not None:  # a folder saved by the upstream processor: load it as the merging one
            return target.from_pretrained(
                pretrained_model_name_or_path, *args, audio_token_merge=audio_token_merge, **kwargs
            )
        if isinstance(processor, tuple(processors.values())):
            processor._init_setting(audio_token_merge)
            return processor
        raise ValueError(
            f"`audio_token_merge` is only supported for {sorted(c.__name__ for c in processors)}; "
            f"{pretrained_model_name_or_path!r} loads a {type(processor).__name__}."
        )

    from_pretrained._hf_ltbm_wrapped = True
    return from_pretrained


def _plain_setting_kwarg(original):
    """`Auto*.from_pretrained` that hands an `audio_token_merge=` keyword on as a validated plain dict: the Auto
    classes pass it to the model config first, and a config object there broke transformers' INFO log line."""

    @functools.wraps(original)
    def from_pretrained(*args, **kwargs):
        if "audio_token_merge" in kwargs:
            kwargs["audio_token_merge"] = plain_setting(kwargs["audio_token_merge"])
        return original(*args, **kwargs)

    from_pretrained._hf_ltbm_wrapped = True
    return from_pretrained


def register() -> None:
    """Registers everything (safe to call any number of times)."""
    for backbone in BACKBONES.values():
        config_class = backbone.config_class
        extra = [getattr(transformers, name) for name in backbone.extra_auto_classes]
        if backbone.base_model is not None:  # Qwen2.5-Omni's thinker on transformers 5.19 has no base model
            AutoModel.register(config_class, backbone.base_model, exist_ok=True)
        for auto in (AutoModelForSeq2SeqLM, AutoModelForPreTraining, *extra):
            auto.register(config_class, backbone.generation_model, exist_ok=True)
        for auto in (AutoModel, AutoModelForSeq2SeqLM, AutoModelForPreTraining, *extra):
            if not getattr(auto.from_pretrained, "_hf_ltbm_wrapped", False):
                auto.from_pretrained = staticmethod(_plain_setting_kwarg(auto.from_pretrained))
        for cls in (backbone.base_model, backbone.generation_model):
            if cls is not None:
                _register_conversion(cls, backbone.model_type)
        AutoProcessor.register(config_class, backbone.processor, exist_ok=True)
    register_pipeline()
    if not getattr(AutoProcessor.from_pretrained, "_hf_ltbm_wrapped", False):
        AutoProcessor.from_pretrained = staticmethod(_merging_processor_from_pretrained(AutoProcessor.from_pretrained))
