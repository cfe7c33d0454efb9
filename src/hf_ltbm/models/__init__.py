"""The machinery that makes an audio-language model run its language model on merged audio tokens: the mixins
(`model`, `generation`) with the hook protocol a backbone implements (`hooks`), the merging forward's steps
(`forward`), the sequence compaction and the per-unit merge. The backbones' model classes live in
`hf_ltbm.backbones` (a layer above this one)."""

from .generation import AudioTokenMergeGenerationMixin
from .model import AudioTokenMergeModelMixin
from .outputs import AudioTokenMergeCausalLMOutput, AudioTokenMergeModelOutput, AudioTokenMergeOutput

__all__ = [
    "AudioTokenMergeCausalLMOutput",
    "AudioTokenMergeGenerationMixin",
    "AudioTokenMergeModelMixin",
    "AudioTokenMergeModelOutput",
    "AudioTokenMergeOutput",
]
