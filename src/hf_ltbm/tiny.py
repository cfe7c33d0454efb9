"""Tiny random-initialised models of every backbone (`hf_ltbm.backbones`), built in-process with no download.

They have the real architectures and the real audio front end (16 kHz, 128 mel bins, 30 s windows, 25 audio tokens
per second), so token counts, merging, compaction and generation behave exactly as with the released checkpoints; only
the widths are tiny and the weights random. **The text they generate is meaningless.** The CLI's offline demo runs
on them (`--model tiny-random-qwen2-audio`), and they are handy in tests and examples. This module is the one place
tiny models, their processors and their saved checkpoints are made: a `TinySpec` changes their sizes (the tests use
2 s windows, `TinySpec(window_seconds=2)`: 200 mel frames, 50 audio tokens per window).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch

from .backbones import BACKBONES, Backbone
from .backbones.tiny_parts import (
    DEFAULT_TINY_SPEC,
    TinySpec,
    check_spec,
    tiny_audio_config,
    tiny_text_config,
    tiny_tokenizer,
)
from .config import MergeSetting

__all__ = [
    "DEFAULT_TINY_SPEC",
    "TINY_MODELS",
    "TinySpec",
    "build_tiny_config",
    "build_tiny_model",
    "build_tiny_processor",
    "save_tiny_model",
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


def build_tiny_processor(
    name: str = "tiny-random-qwen2-audio",
    audio_token_merge: MergeSetting = None,
    *,
    spec: Optional[TinySpec] = None,
    upstream: bool = False,
    **processor_kwargs: Any,
) -> Any:
    """The processor of one of `TINY_MODELS`, without building the model: Whisper features at 16 kHz (`spec`'s mel bins
    and window: 128, 30 s) and an in-process word-level tokenizer with a chat template (Voxtral: a tiny tekken one).

    Args:
        name: one of `TINY_MODELS`.
        audio_token_merge: the merging processor's setting (`None`: none).
        spec: the sizes (`None`: `TinySpec()`); the processor reads `window_seconds` and `mel_bins`.
        upstream: the upstream processor class (`Qwen2AudioProcessor`, ...) instead of the merging one (then
            `audio_token_merge` must be `None`).
        processor_kwargs: more arguments of the processor class (`max_audio_len=6` for Audio Flamingo 3).

    Raises:
        ValueError: an unknown `name`; a setting with `upstream=True`; `spec` sizes the family cannot take (Voxtral:
            a window other than 30 s).
        TypeError: a `spec` that is not a `TinySpec`.
    """
    backbone = _backbone(name)
    return backbone.tiny_processor(audio_token_merge, check_spec(spec), upstream=upstream, **processor_kwargs)


def build_tiny_config(
    name: str = "tiny-random-qwen2-audio",
    *,
    spec: Optional[TinySpec] = None,
    processor: Any = None,
    **config_kwargs: Any,
) -> Any:
    """The upstream config (`Qwen2AudioConfig`, ...) of one of `TINY_MODELS`, with `spec`'s sizes (`None`:
    `TinySpec()`), the vocabulary and special token ids of `processor`'s tokenizer (`None`: the tiny processor of the
    same `spec`; Voxtral's tokenizer alone, as its processor takes only 30 s windows); `config_kwargs` override the
    config's arguments (`audio_token_id=4`).

    Raises:
        ValueError: an unknown `name`; `spec` sizes the family cannot take (Voxtral: an odd `window_seconds`).
        TypeError: a `spec` that is not a `TinySpec`.
    """
    return _backbone(name).tiny_config(processor, check_spec(spec), **config_kwargs)


def build_tiny_model(
    name: str = "tiny-random-qwen2-audio",
    audio_token_merge: MergeSetting = None,
    seed: int = 0,
    *,
    spec: Optional[TinySpec] = None,
) -> tuple[torch.nn.Module, Any]:
    """Builds `(model, processor)` for one of `TINY_MODELS`, with random weights drawn from `seed`.

    The model is the merging `*ForConditionalGeneration` class in eval mode; the processor is the matching merging
    processor with the same `audio_token_merge` (both can be changed later, e.g. with `hf_ltbm.audio_token_merge`).
    `spec` sets the sizes (`None`: `TinySpec()`, 30 s windows of 750 audio tokens; `TinySpec(window_seconds=2)`:
    2 s windows of 50). The global torch RNG is left untouched.

    Raises:
        ValueError: an unknown `name`; `spec` sizes the family cannot take (Voxtral: a window other than 30 s).
        TypeError: a `spec` that is not a `TinySpec`.
    """
    backbone = _backbone(name)
    spec = check_spec(spec)
    processor = backbone.tiny_processor(audio_token_merge, spec)
    tokenizer = processor.tokenizer
    config = backbone.tiny_config(processor, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = backbone.generation_model(config, audio_token_merge=audio_token_merge)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval(), processor


def save_tiny_model(
    name: str,
    folder: Union[str, Path],
    audio_token_merge: MergeSetting = None,
    seed: int = 0,
    *,
    spec: Optional[TinySpec] = None,
) -> Path:
    """Saves `build_tiny_model(name, audio_token_merge, seed, spec=spec)` to `folder` (created if missing) as the
    family's released checkpoints are laid out (`Backbone.save_tiny`): `save_pretrained` of the model and the
    processor, which plain transformers loads as the upstream classes (with hf_ltbm imported and a setting, the
    merging ones). Voxtral's folder also holds Mistral's format (`params.json`, `consolidated.safetensors`), which
    vLLM reads; Qwen2.5-Omni's is a whole `qwen2_5_omni` checkpoint holding the thinker, as its releases are.
    Returns the folder.

    Raises:
        ValueError: an unknown `name`; `spec` sizes the family cannot take.
    """
    model, processor = build_tiny_model(name, audio_token_merge, seed, spec=spec)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _backbone(name).save_tiny(model, processor, folder)
    return folder
