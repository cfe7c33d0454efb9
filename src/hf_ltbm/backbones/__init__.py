"""The supported audio-language model families, one module each (a package for Qwen2.5-Omni), behind a registry.

Every module of this package except `base` and `tiny_parts` is a family: importing this package imports each one's
declaration (cheap: no torch, no transformers model code) and registers it, in listing order. A family's merging
classes are made the first time one is used (`hf_ltbm.backbones.qwen2_audio.Qwen2AudioLTBMModel`, or through
`hf_ltbm` and the Auto classes). Adding a family means adding its module; nothing else lists it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .base import BACKBONES, Backbone, BackboneClasses, backbone_for, get_backbone, register_backbone

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneClasses",
    "backbone_for",
    "exported_classes",
    "get_backbone",
    "max_audio_seconds",
    "register_backbone",
    "units_per_clip",
]

_NOT_FAMILIES = {"base", "tiny_parts"}


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _NOT_FAMILIES:
            importlib.import_module(f"{__name__}.{module.name}")
    ordered = sorted(BACKBONES.values(), key=lambda backbone: (backbone.listing_order, backbone.model_type))
    BACKBONES.clear()
    BACKBONES.update((backbone.model_type, backbone) for backbone in ordered)


_discover()


def exported_classes() -> dict[str, Backbone]:
    """The name of every family's merging class (`Qwen2AudioLTBMModel`, ...) -> the backbone that makes it."""
    return {name: backbone for backbone in BACKBONES.values() for name in backbone.class_names.values()}


def _backbone(processor: Any) -> Backbone:
    backbone = backbone_for(processor)
    if backbone is None:
        raise ValueError(f"{type(processor).__name__} is not the processor of a backbone hf-ltbm supports.")
    return backbone


def units_per_clip(processor: Any, num_samples: list[int]) -> list[int]:
    """How many audio-encoder units (rows of `input_features`) each clip of `num_samples[i]` samples becomes with
    `processor` (stock or merging): one per clip for Qwen2-Audio, one per started 30 s window for Audio Flamingo 3
    (see each backbone's `units_per_clip`)."""
    return _backbone(processor).units_per_clip(processor, num_samples)


def max_audio_seconds(processor: Any) -> float:
    """The longest clip `processor`'s backbone takes whole: one 30 s window for Qwen2-Audio; for Audio Flamingo 3 the
    whole windows that fit in `max_audio_len` (600 s by default)."""
    return _backbone(processor).max_audio_seconds(processor)


def __getattr__(name: str) -> Any:  # the families' merging classes, made on first use
    backbone = exported_classes().get(name)
    if backbone is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return backbone.exported(name)
