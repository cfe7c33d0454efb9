"""Tiny random-initialised models of every backbone (`hf_ltbm.backbones`), built in-process with no download.

They have the real architectures and the real audio front end (16 kHz, 128 mel bins, 30 s windows, 25 audio tokens
per second), so token counts, merging, compaction and generation behave exactly as with the released checkpoints; only
the widths are tiny and the weights random. **The text they generate is meaningless.** The CLI's offline demo runs
on them (`--model tiny-random-qwen2-audio`), and they are handy in tests and examples.
"""

from __future__ import annotations

from typing import Any

import torch

from .backbones import BACKBONES, Backbone
from .backbones.tiny_parts import tiny_audio_config, tiny_text_config, tiny_tokenizer
from .config import MergeSetting

__all__ = [
    "TINY_MODELS",
    "build_tiny_model",
    "build_tiny_processor",
    "tiny_audio_config",
    "tiny_text_config",
    "tiny_tokenizer",
]

TINY_MODELS = tuple(backbone.tiny_name for backbone in BACKBONES.values())
"""Names the CLI and `build_tiny_model` accept in place of a checkpoint (`tiny-random-qwen2-audio`,
`tiny-random-audioflamingo3`)."""


def _backbone(name: str) -> Backbone:
    for backbone in BACKBONES.values():
        if backbone.tiny_name == name:
            return backbone
    raise ValueError(f"Unknown tiny model {name!r}; choose one of {list(TINY_MODELS)}.")


def build_tiny_processor(name: str = "tiny-random-qwen2-audio", audio_token_merge: MergeSetting = None) -> Any:
    """The merging processor of one of `TINY_MODELS` (Whisper features at 16 kHz, 128 mel bins, 30 s windows; an
    in-process word-level tokenizer with a chat template), without building the model."""
    return _backbone(name).tiny_processor(audio_token_merge)


def build_tiny_model(
    name: str = "tiny-random-qwen2-audio", audio_token_merge: MergeSetting = None, seed: int = 0
) -> tuple[torch.nn.Module, Any]:
    """Builds `(model, processor)` for one of `TINY_MODELS`, with random weights drawn from `seed`.

    The model is the merging `*ForConditionalGeneration` class in eval mode; the processor is the matching merging
    processor with the same `audio_token_merge` (both can be changed later, e.g. with `hf_ltbm.audio_token_merge`).
    The global torch RNG is left untouched.
    """
    backbone = _backbone(name)
    processor = build_tiny_processor(name, audio_token_merge)
    tokenizer = processor.tokenizer
    config = backbone.tiny_config(processor)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = backbone.generation_model(config, audio_token_merge=audio_token_merge)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval(), processor
