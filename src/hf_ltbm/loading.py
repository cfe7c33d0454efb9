"""Loading a model and its processor by name (a checkpoint, or one of the tiny random models) with a merge setting,
checked first: what the command line, the evaluation harness and the lmms-eval models share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from transformers.utils import logging

from .backbones import BACKBONES, get_backbone
from .config import AudioTokenMergeConfig
from .tiny import TINY_MODELS, build_tiny_model, build_tiny_processor

logger = logging.get_logger(__name__)

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "ModelLoadError",
    "load_model",
    "load_processor",
    "resolve_device",
    "resolve_dtype",
]

#: The model types hf-ltbm loads: every backbone's, and the whole-checkpoint types that hold one.
SUPPORTED_MODEL_TYPES = tuple(BACKBONES) + tuple(t for b in BACKBONES.values() for t in b.checkpoint_model_types)


class ModelLoadError(ValueError):
    """A model name, device or dtype that cannot be used; the message says why and what would work."""


def resolve_device(name: str) -> torch.device:
    """`"auto"` (CUDA if available, else CPU) or a torch device name, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ModelLoadError(f"--device {name!r} is not a device: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu.")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`"auto"` (bfloat16 on CUDA where supported, else float32) or a torch dtype name."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def _config(name: str) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        hint = (
            "The folder needs a config.json."
            if Path(name).exists()
            else "Pass a local checkpoint folder or a hub id that is cached or reachable "
            f"(offline, try --model {TINY_MODELS[0]})."
        )
        raise ModelLoadError(f"Could not load model {name!r}: {str(err).splitlines()[0]} {hint}") from err
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"Model {name!r} is a {config.model_type!r} model; hf-ltbm supports {', '.join(SUPPORTED_MODEL_TYPES)} "
            "(e.g. Qwen/Qwen2-Audio-7B-Instruct, nvidia/audio-flamingo-3-hf)."
        )
    return config


def load_processor(name: str, setting: Optional[AudioTokenMergeConfig]) -> Any:
    """The merging processor of model `name` (cheap: load it first to check inputs before the weights)."""
    if name in TINY_MODELS:
        return build_tiny_processor(name, audio_token_merge=setting)
    from transformers import AutoProcessor

    _config(name)
    return AutoProcessor.from_pretrained(name, audio_token_merge=setting)


def load_model(name: str, setting: Optional[AudioTokenMergeConfig], device: torch.device, dtype: torch.dtype) -> Any:
    """The merging `*ForConditionalGeneration` model `name` in eval mode; unknown or unsupported models raise
    `ModelLoadError`."""
    if name in TINY_MODELS:
        logger.warning(f"{name}: random weights built in-process, so the generated text is meaningless.")
        return build_tiny_model(name, audio_token_merge=setting)[0].to(device=device, dtype=dtype)
    model_class = get_backbone(_config(name).model_type).generation_model  # what AutoModelForSeq2SeqLM maps it to
    model = model_class.from_pretrained(
        name, audio_token_merge=setting, dtype=dtype, device_map=str(device) if device.type != "cpu" else None
    )
    return model.eval()
