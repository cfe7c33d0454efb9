"""Qwen2.5-Omni's thinker on transformers 5.19, whose thinker is one flat class (`audio_tower`, `visual`, `model` =
the language model, `lm_head`): the head itself holds the merging base-model methods. Imported only on such a
release; raising the supported floor past 5.19 deletes this file."""

from __future__ import annotations

from typing import Any

from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

from ...config import MergeSetting
from ...models.generation import AudioTokenMergeGenerationMixin
from ...models.model import AudioTokenMergeModelMixin
from ...models.setting import UNSET, SettingAccess, init_setting
from .modeling import ThinkerGenerationMixin, ThinkerMergingMixin

__all__ = ["Qwen2_5OmniThinkerLTBMForConditionalGeneration"]


class Qwen2_5OmniThinkerLTBMForConditionalGeneration(
    ThinkerGenerationMixin,
    ThinkerMergingMixin,
    AudioTokenMergeModelMixin,
    AudioTokenMergeGenerationMixin,
    Qwen2_5OmniThinkerForConditionalGeneration,
):
    """`Qwen2_5OmniThinkerForConditionalGeneration` whose language model runs on merged audio tokens (one merge
    per clip) at time-aligned positions. Works with prompts from the merging processor and from the stock
    processor (compacted at prefill). With no merge setting it is the upstream class. On this transformers
    release the thinker is one class: the head itself holds the merging base-model methods."""

    _model_class = None
    _merging_forward = AudioTokenMergeGenerationMixin._merging_forward  # the head's: LM head and loss
    set_audio_token_merge = SettingAccess.set_audio_token_merge

    def __init__(self, config: Qwen2_5OmniThinkerConfig, audio_token_merge: MergeSetting = UNSET) -> None:
        init_setting(config, audio_token_merge)
        Qwen2_5OmniThinkerForConditionalGeneration.__init__(self, config)
        self._validate_audio_token_merge(self.audio_token_merge)
        self._sync_attention()

    @property
    def language_model(self) -> Any:
        """The language model (upstream's `model` on this release)."""
        return self.model

    @property
    def _merge_model(self) -> Any:
        return self

    def _model_merging_forward(self, **kwargs: Any):
        return ThinkerMergingMixin._merging_forward(self, **kwargs)
