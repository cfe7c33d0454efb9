"""The machinery that makes an audio-language model run its language model on merged audio tokens (the mixins, the
sequence compaction, the per-unit merge); the backbones' model classes live in `hf_ltbm.backbones` and are
re-exported here."""

from typing import Any

from .mixin import (
    AudioTokenMergeCausalLMOutput,
    AudioTokenMergeGenerationMixin,
    AudioTokenMergeModelMixin,
    AudioTokenMergeModelOutput,
    AudioTokenMergeOutput,
)

__all__ = [
    "AudioTokenMergeCausalLMOutput",
    "AudioTokenMergeGenerationMixin",
    "AudioTokenMergeModelMixin",
    "AudioTokenMergeModelOutput",
    "AudioTokenMergeOutput",
]

_BACKBONE_CLASSES = {
    "AudioFlamingo3LTBMForConditionalGeneration",
    "AudioFlamingo3LTBMModel",
    "Qwen2AudioLTBMForConditionalGeneration",
    "Qwen2AudioLTBMModel",
}


def __getattr__(name: str) -> Any:
    # `hf_ltbm.backbones` imports this package's modules: its classes are re-exported lazily.
    if name in _BACKBONE_CLASSES:
        from .. import backbones

        return getattr(backbones, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
