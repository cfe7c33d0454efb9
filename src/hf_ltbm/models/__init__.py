"""The machinery that makes an audio-language model run its language model on merged audio tokens (the mixins, the
sequence compaction, the per-unit merge); the backbones' model classes live in `hf_ltbm.backbones`."""

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
