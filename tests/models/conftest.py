"""Fixtures: tiny random models of every backbone (Qwen2-Audio, Audio Flamingo 3, Music Flamingo, Qwen2.5-Omni's
thinker), upstream and merging, with the same weights."""

from dataclasses import dataclass

import pytest
import torch
from transformers import (
    AudioFlamingo3ForConditionalGeneration,
    MusicFlamingoForConditionalGeneration,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2AudioForConditionalGeneration,
)

import hf_ltbm
from hf_ltbm import output_length

from .tiny import audioflamingo3_config, make_batch, musicflamingo_config, qwen2_5_omni_config, qwen2_audio_config


@dataclass
class Backbone:
    name: str
    upstream: type
    merging: type
    config: callable
    mel_bins: int
    mask_name: str
    #: The module that projects audio tokens into the language model, and the modules besides the audio encoder and
    #: the language model (for device maps).
    projector: str = "model.multi_modal_projector"
    other_modules: tuple = ("model.multi_modal_projector",)
    #: The head holds the encoders and the language model directly (`audio_tower`, `model` = the language model).
    flat: bool = False

    def module(self, name: str) -> str:
        """A module's name in this backbone's layout, from its name under a base model (`model.audio_tower`)."""
        if not self.flat:
            return name
        return (
            name.replace("model.language_model.", "model.")
            .replace("model.audio_tower", "audio_tower")
            .replace("model.visual", "visual")
        )

    def models(self, seed=0):
        torch.manual_seed(seed)
        up = self.upstream(self.config()).eval()
        ours = self.merging(self.config()).eval()
        ours.load_state_dict(up.state_dict())
        return up, ours

    def inputs(self, unit_frames, texts, setting=None, padding_side="left"):
        """Model kwargs for rows of audio units; `setting=None` emits N placeholders per unit, else M."""
        parsed = hf_ltbm.AudioTokenMergeConfig.from_value(setting)
        counts = (lambda n: n) if parsed is None else parsed.output_length
        ids, mask, feats, fmask = make_batch(self.mel_bins, unit_frames, texts, counts, padding_side=padding_side)
        return {"input_ids": ids, "attention_mask": mask, "input_features": feats, self.mask_name: fmask}

    def audio_features(self, model, inputs):
        """`model.get_audio_features` on `inputs` (Music Flamingo also reads the prompt, for the windows' times)."""
        extra = (inputs["input_ids"],) if self.name == "musicflamingo" else ()
        return model.get_audio_features(inputs["input_features"], inputs[self.mask_name], *extra)


QWEN = Backbone(
    "qwen2_audio",
    Qwen2AudioForConditionalGeneration,
    hf_ltbm.Qwen2AudioLTBMForConditionalGeneration,
    qwen2_audio_config,
    80,
    "feature_attention_mask",
)
AF3 = Backbone(
    "audioflamingo3",
    AudioFlamingo3ForConditionalGeneration,
    hf_ltbm.AudioFlamingo3LTBMForConditionalGeneration,
    audioflamingo3_config,
    128,
    "input_features_mask",
)

MUSICFLAMINGO = Backbone(
    "musicflamingo",
    MusicFlamingoForConditionalGeneration,
    hf_ltbm.MusicFlamingoLTBMForConditionalGeneration,
    musicflamingo_config,
    128,
    "input_features_mask",
)


OMNI = Backbone(
    "qwen2_5_omni_thinker",
    Qwen2_5OmniThinkerForConditionalGeneration,
    hf_ltbm.Qwen2_5OmniThinkerLTBMForConditionalGeneration,
    qwen2_5_omni_config,
    128,
    "feature_attention_mask",
    projector="model.audio_tower.proj",  # inside the audio encoder
    other_modules=("model.visual",),
    flat=hf_ltbm.Qwen2_5OmniThinkerLTBMModel is None,  # transformers 5.19: one flat thinker class
)
BACKBONES = [QWEN, AF3, MUSICFLAMINGO, OMNI]


@pytest.fixture(params=BACKBONES, ids=lambda b: b.name)
def backbone(request):
    return request.param


# Rows of audio units (valid mel frames each) and the text around them: a short and a full window in row 0
# (for AF3 two windows of one clip; for Qwen2-Audio two clips), one unit in row 1, different text lengths.
UNITS = [[200, 130], [170]]
TEXTS = [([5, 6, 7], [8, 9]), ([5], [10, 11, 12, 13])]


def merged(n, ratio=0.5):
    return output_length(n, keep_ratio=ratio)
