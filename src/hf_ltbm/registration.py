"""Registers every backbone's merging classes (`hf_ltbm.backbones.BACKBONES`) with transformers' Auto classes
(idempotent). `import hf_ltbm` arranges for `register_models`, `register_processors` and the pipeline task to run as
soon as transformers' Auto modules and pipelines are imported (at once if they already are); a family's classes are
made only when an Auto class is asked for that family.

- `AutoModel` -> `*LTBMModel`; `AutoModelForSeq2SeqLM`, `AutoModelForPreTraining` and the backbone's
  `extra_auto_classes` (`AutoModelForMultimodalLM` for Qwen2-Audio) -> `*LTBMForConditionalGeneration`. With no
  merge setting these are bit-identical to the upstream classes, so the replacement is invisible until
  `audio_token_merge=...` is passed.
- (When a family's classes are made, `hf_ltbm.backbones` registers each model class's checkpoint conversion mapping:
  transformers treats registered subclasses as custom code and would otherwise skip the key renaming of native
  checkpoints, and `lm_head` would silently load random weights.)
- `AutoProcessor` -> `*LTBMProcessor`, and `AutoProcessor.from_pretrained(path, audio_token_merge=...)` returns the
  merging processor even for a folder saved by the upstream processor. A folder saved by a merging processor names
  the upstream class (plain transformers loads it as such) and holds `audio_token_merge`: `AutoProcessor` returns the
  merging processor with that setting.
"""

from __future__ import annotations

import functools
import importlib
import sys
from types import ModuleType
from typing import Optional

from .backbones import BACKBONES, backbone_for
from .config import MergeSetting, plain_setting
from .lazy import register_deferred

__all__ = ["register", "register_models", "register_pipeline", "register_processors"]

_SENTINEL = object()


def _saved_setting(processor_class: type, pretrained_model_name_or_path, kwargs: dict) -> MergeSetting:
    """The `audio_token_merge` a folder's `processor_config.json` holds (`None` when it has none)."""
    processor_dict, _ = processor_class.get_processor_dict(pretrained_model_name_or_path, **dict(kwargs))
    return processor_dict.get("audio_token_merge")


def _merging_processor_from_pretrained(original):
    @functools.wraps(original)
    def from_pretrained(pretrained_model_name_or_path, *args, audio_token_merge=_SENTINEL, **kwargs):
        processor = original(pretrained_model_name_or_path, *args, **kwargs)
        backbone = backbone_for(processor)
        # the merging processor of a stock one (a folder saved by the upstream processor or by a merging one)
        target = backbone.processor if backbone and type(processor).__name__ == backbone.processor_name else None
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
        if backbone is not None and isinstance(processor, backbone.processor):
            processor._init_setting(audio_token_merge)
            return processor
        raise ValueError(
            f"`audio_token_merge` is only supported for {sorted(b.processor_name for b in BACKBONES.values())}; "
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


def register_models(modeling_auto: Optional[ModuleType] = None) -> None:
    """Registers every backbone's merging models with the Auto model classes of `modeling_auto` (transformers'
    `models.auto.modeling_auto`), as deferred entries: this runs right after transformers imports that module
    (`hf_ltbm.lazy`), possibly in the middle of another transformers import, so it imports nothing itself."""
    auto = modeling_auto or importlib.import_module("transformers.models.auto.modeling_auto")
    for backbone in BACKBONES.values():
        extra = [getattr(auto, name) for name in backbone.extra_auto_classes]
        # Qwen2.5-Omni's thinker on transformers 5.19 has no base model: AutoModel keeps upstream's mapping there
        if backbone.has_base_model():
            register_deferred(
                auto.AutoModel._model_mapping, backbone.config_name, lambda backbone=backbone: backbone.base_model
            )
        for cls in (auto.AutoModelForSeq2SeqLM, auto.AutoModelForPreTraining, *extra):
            register_deferred(
                cls._model_mapping, backbone.config_name, lambda backbone=backbone: backbone.generation_model
            )
        for cls in (auto.AutoModel, auto.AutoModelForSeq2SeqLM, auto.AutoModelForPreTraining, *extra):
            if not getattr(cls.from_pretrained, "_hf_ltbm_wrapped", False):
                cls.from_pretrained = staticmethod(_plain_setting_kwarg(cls.from_pretrained))


def register_processors(processing_auto: Optional[ModuleType] = None) -> None:
    """Registers every backbone's merging processor with `AutoProcessor` (deferred, as `register_models`)."""
    auto = processing_auto or importlib.import_module("transformers.models.auto.processing_auto")
    for backbone in BACKBONES.values():
        register_deferred(auto.PROCESSOR_MAPPING, backbone.config_name, lambda backbone=backbone: backbone.processor)
    if not getattr(auto.AutoProcessor.from_pretrained, "_hf_ltbm_wrapped", False):
        auto.AutoProcessor.from_pretrained = staticmethod(
            _merging_processor_from_pretrained(auto.AutoProcessor.from_pretrained)
        )


def register_pipeline(_pipelines: Optional[ModuleType] = None) -> None:
    """Registers the "audio-text-to-text" pipeline task (unless transformers has its own). When transformers' pipelines
    are being imported by `hf_ltbm.pipeline` itself, that module registers the task once it is defined."""
    module = sys.modules.get(f"{__package__}.pipeline")
    if module is not None and getattr(module.__spec__, "_initializing", False):
        return
    from .pipeline import register_pipeline

    register_pipeline()


def register() -> None:
    """Registers everything now (safe to call any number of times)."""
    register_models()
    register_processors()
    register_pipeline()
