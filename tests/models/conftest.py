"""Fixtures: tiny random models of every backbone whose prompts the tests write with ids (Qwen2-Audio, Audio
Flamingo 3, Music Flamingo, Qwen2.5-Omni's thinker, GLM-ASR), upstream and merging, with the same weights
(`hf_ltbm.tiny`'s configs with the sizes of `tiny.SPECS`)."""

import functools
from dataclasses import dataclass

import pytest
import torch
from transformers import (
    AudioFlamingo3ForConditionalGeneration,
    GlmAsrForConditionalGeneration,
    MusicFlamingoForConditionalGeneration,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2AudioForConditionalGeneration,
)

import hf_ltbm
from hf_ltbm import output_length

from . import tiny


@dataclass
class Backbone:
    name: str
    upstream: type
    merging: type
    mask_name: str
    #: The module that projects audio tokens into the language model, and the modules besides the audio encoder and
    #: the language model (for device maps).
    projector: str = "model.multi_modal_projector"
    other_modules: tuple = ("model.multi_modal_projector",)
    #: The head holds the encoders and the language model directly (`audio_tower`, `model` = the language model).
    flat: bool = False
    #: Why settings that read the audio encoder's attention scores are refused (`None`: they are served); GLM-ASR's
    #: encoder rotates queries and keys inside its attention.
    scores_refused: str = None

    @property
    def frames_per_token(self) -> int:
        """Mel frames per audio token: 4 (25 per second), 8 for GLM-ASR's 4 stacked encoder frames (12.5 per second;
        `tiny.frames_per_token`)."""
        return tiny.frames_per_token(self.name)

    def tokens(self, frames: int) -> int:
        """Audio tokens of a unit of `frames` valid mel frames (upstream's arithmetic, `tiny.tokens_for_frames`)."""
        return tiny.tokens_for_frames(frames, self.frames_per_token)

    def module(self, name: str) -> str:
        """A module's name in this backbone's layout, from its name under a base model (`model.audio_tower`)."""
        if not self.flat:
            return name
        return (
            name.replace("model.language_model.", "model.")
            .replace("model.audio_tower", "audio_tower")
            .replace("model.visual", "visual")
        )

    def config(self, **kwargs):
        """The upstream config of the family's tiny model (`tiny.config`); `kwargs` override its arguments."""
        return tiny.config(self.name, **kwargs)

    @property
    def mel_bins(self) -> int:
        return tiny.SPECS[self.name].mel_bins

    @functools.cached_property
    def tokenizer(self):
        return tiny.processor(self.name, merging=True).tokenizer

    @functools.cached_property
    def audio_token_id(self) -> int:
        return tiny.audio_token_id(self.name)

    def text_ids(self, words: str) -> list[int]:
        """The ids of space-separated `words` in the family's tiny tokenizer."""
        return self.tokenizer.convert_tokens_to_ids(words.split())

    def models(self, seed=0):
        torch.manual_seed(seed)
        up = self.upstream(self.config()).eval()
        ours = self.merging(self.config()).eval()
        ours.load_state_dict(up.state_dict())
        return up, ours

    def inputs(self, unit_frames, texts, setting=None, padding_side="left"):
        """Model kwargs for rows of audio units; `setting=None` emits N placeholders per unit, else M. `texts[r]`:
        the words before and after row r's audio."""
        parsed = hf_ltbm.AudioTokenMergeConfig.from_value(setting)
        counts = (lambda n: n) if parsed is None else parsed.output_length
        texts = [(self.text_ids(pre), self.text_ids(post)) for pre, post in texts]
        ids, mask, feats, fmask = tiny.make_batch(
            self.mel_bins,
            unit_frames,
            texts,
            counts,
            padding_side=padding_side,
            audio_token_id=self.audio_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            frames_per_token=self.frames_per_token,
        )
        return {"input_ids": ids, "attention_mask": mask, "input_features": feats, self.mask_name: fmask}

    def audio_features(self, model, inputs):
        """`model.get_audio_features` on `inputs` (Music Flamingo also reads the prompt, for the windows' times)."""
        extra = (inputs["input_ids"],) if self.name == "musicflamingo" else ()
        return model.get_audio_features(inputs["input_features"], inputs[self.mask_name], *extra)


QWEN = Backbone(
    "qwen2_audio",
    Qwen2AudioForConditionalGeneration,
    hf_ltbm.Qwen2AudioLTBMForConditionalGeneration,
    "feature_attention_mask",
)
AF3 = Backbone(
    "audioflamingo3",
    AudioFlamingo3ForConditionalGeneration,
    hf_ltbm.AudioFlamingo3LTBMForConditionalGeneration,
    "input_features_mask",
)

MUSICFLAMINGO = Backbone(
    "musicflamingo",
    MusicFlamingoForConditionalGeneration,
    hf_ltbm.MusicFlamingoLTBMForConditionalGeneration,
    "input_features_mask",
)


OMNI = Backbone(
    "qwen2_5_omni_thinker",
    Qwen2_5OmniThinkerForConditionalGeneration,
    hf_ltbm.Qwen2_5OmniThinkerLTBMForConditionalGeneration,
    "feature_attention_mask",
    projector="model.audio_tower.proj",  # inside the audio encoder
    other_modules=("model.visual",),
    flat=hf_ltbm.Qwen2_5OmniThinkerLTBMModel is None,  # transformers 5.19: one flat thinker class
)
GLMASR = Backbone(
    "glmasr",
    GlmAsrForConditionalGeneration,
    hf_ltbm.GlmAsrLTBMForConditionalGeneration,
    "input_features_mask",
    scores_refused=r"GLM-ASR's encoder rotates its queries and keys by position",
)
BACKBONES = [QWEN, AF3, MUSICFLAMINGO, OMNI, GLMASR]


@pytest.fixture(params=BACKBONES, ids=lambda b: b.name)
def backbone(request):
    return request.param


# Rows of audio units (valid mel frames each) and the words around them: a short and a full window in row 0
# (for AF3 and GLM-ASR two windows of one clip; for Qwen2-Audio two clips), one unit in row 1, different text lengths.
UNITS = [[200, 130], [170]]
TEXTS = [("what is in", "the audio"), ("describe", "the sound of this")]


def merged(n, ratio=0.5):
    return output_length(n, keep_ratio=ratio)
