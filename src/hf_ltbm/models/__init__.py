"""Model classes whose language model runs on merged audio tokens."""

from .audioflamingo3 import AudioFlamingo3LTBMForConditionalGeneration, AudioFlamingo3LTBMModel
from .mixin import (
    AudioTokenMergeCausalLMOutput,
    AudioTokenMergeGenerationMixin,
    AudioTokenMergeModelMixin,
    AudioTokenMergeModelOutput,
    AudioTokenMergeOutput,
)
from .qwen2_audio import Qwen2AudioLTBMForConditionalGeneration, Qwen2AudioLTBMModel

__all__ = [
    "AudioFlamingo3LTBMForConditionalGeneration",
    "AudioFlamingo3LTBMModel",
    "AudioTokenMergeCausalLMOutput",
    "AudioTokenMergeGenerationMixin",
    "AudioTokenMergeModelMixin",
    "AudioTokenMergeModelOutput",
    "AudioTokenMergeOutput",
    "Qwen2AudioLTBMForConditionalGeneration",
    "Qwen2AudioLTBMModel",
]
