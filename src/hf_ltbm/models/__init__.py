"""The machinery that makes an audio-language model run its language model on merged audio tokens: the mixins
(`model`, `generation`) with the hook protocol a backbone implements (`hooks`), the merging forward's steps
(`forward`), the sequence compaction and the per-unit merge. The backbones' model classes live in
`hf_ltbm.backbones` (a layer above this one).

The names below are loaded on first use, so that the pure-torch modules (`units`, `compaction`, `encoder_probe`)
import without transformers (the vLLM plugin and Qwen2.5-Omni's position math use them).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Name -> the module (relative to this package) that defines it.
_EXPORTS = {
    "AudioTokenMergeGenerationMixin": ".generation",
    "AudioTokenMergeModelMixin": ".model",
    "AudioTokenMergeCausalLMOutput": ".outputs",
    "AudioTokenMergeModelOutput": ".outputs",
    "AudioTokenMergeOutput": ".outputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
