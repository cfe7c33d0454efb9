"""The shared machinery that makes an audio-language model run its language model on merged audio tokens, gathered
under one name for the backbones that import it from here.

`AudioTokenMergeModelMixin` (`hf_ltbm.models.model`) goes in front of a backbone's base `*Model`: it merges the
encoder output per audio unit, writes the merged tokens into the prompt and, when the prompt was expanded by a stock
processor, compacts the sequence (the steps are in `hf_ltbm.models.forward`). `AudioTokenMergeGenerationMixin`
(`hf_ltbm.models.generation`) goes in front of `*ForConditionalGeneration`: loss on the compacted labels, and the
generation hooks that keep the attention mask and positions in step with the shorter KV cache. With no merge setting
every method defers to the upstream class, so behaviour is bit-identical.

Backbone files only declare a few class attributes and implement the hooks of `hf_ltbm.models.hooks` (at least
`_run_encoder`); the outputs are in `hf_ltbm.models.outputs`, the setting storage in `hf_ltbm.models.setting`.
"""

from .generation import AudioTokenMergeGenerationMixin
from .model import AudioTokenMergeModelMixin
from .outputs import (
    AudioTokenMergeCausalLMOutput,
    AudioTokenMergeModelOutput,
    AudioTokenMergeOutput,
    encoder_output_options,
)

# also what `backbones/qwen2_5_omni.py` imports from here (its head on transformers 5.19 holds the base model's
# methods itself and sets up its merge setting as the mixins do)
from .setting import _UNSET, _init_setting, _SettingAccess  # noqa: F401

__all__ = [
    "AudioTokenMergeCausalLMOutput",
    "AudioTokenMergeGenerationMixin",
    "AudioTokenMergeModelMixin",
    "AudioTokenMergeModelOutput",
    "AudioTokenMergeOutput",
    "encoder_output_options",
]
