"""`ModelTester` classes for transformers' `ModelTesterMixin`, one per family, on `hf_ltbm.tiny`'s configs with the
sizes of `tests/models/tiny.py`: each builds a config carrying a merge setting (or none) and the inputs of a prompt
whose audio placeholders match the audio (the stock processor's count, `N` per unit).

The mixin's own attributes (`batch_size`, `seq_length`, `hidden_size`, ...) describe the sequence the language model
runs on; at keep ratio 1.0 that is the prompt itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

import hf_ltbm

from .. import tiny

#: Text token ids of the prompts start above every special id of the tiny configs (audio, image, video, markers).
FIRST_TEXT_ID = 16
AUDIO_ID, BOS_ID, EOS_ID, IMAGE_ID, VIDEO_ID, VISION_START_ID = 4, 5, 6, 7, 8, 9


@dataclass(frozen=True)
class Family:
    """What the mixin needs to know of one family: its classes, config and audio layout."""

    name: str
    classes: Callable[[], tuple[type, ...]]
    #: The feature mask's keyword (`None`: the family takes none, every mel frame of a unit is valid).
    mask_name: Optional[str]
    #: Audio tokens per unit: 50 for the Whisper-style encoders (200 mel frames), 25 for Voxtral and GLM-ASR (4
    #: frames a token).
    tokens_per_unit: int = 50
    #: The placeholder run is wrapped in begin/end markers (Music Flamingo reads the clips from them).
    markers: bool = False
    #: One image per row next to the audio (Qwen2.5-Omni's thinker, as upstream's tester does).
    image: bool = False
    config_kwargs: dict = field(default_factory=dict)

    def config(self, **kwargs: Any) -> Any:
        """The upstream config of the family's tiny model (`tiny.config`); `kwargs` override its arguments."""
        return tiny.config(self.name, **kwargs)

    @property
    def mel_bins(self) -> int:
        return tiny.SPECS[self.name].mel_bins


def _omni_classes() -> tuple[type, ...]:
    # transformers 5.19 has no base thinker model: the head alone
    classes = (hf_ltbm.Qwen2_5OmniThinkerLTBMModel, hf_ltbm.Qwen2_5OmniThinkerLTBMForConditionalGeneration)
    return tuple(cls for cls in classes if cls is not None)


FAMILIES = {
    family.name: family
    for family in (
        Family(
            "qwen2_audio",
            lambda: (hf_ltbm.Qwen2AudioLTBMModel, hf_ltbm.Qwen2AudioLTBMForConditionalGeneration),
            "feature_attention_mask",
        ),
        Family(
            "audioflamingo3",
            lambda: (hf_ltbm.AudioFlamingo3LTBMModel, hf_ltbm.AudioFlamingo3LTBMForConditionalGeneration),
            "input_features_mask",
        ),
        Family(
            "musicflamingo",
            lambda: (hf_ltbm.MusicFlamingoLTBMModel, hf_ltbm.MusicFlamingoLTBMForConditionalGeneration),
            "input_features_mask",
            markers=True,
            config_kwargs={"audio_bos_token_id": BOS_ID, "audio_eos_token_id": EOS_ID},
        ),
        Family(
            "voxtral",
            lambda: (hf_ltbm.VoxtralLTBMModel, hf_ltbm.VoxtralLTBMForConditionalGeneration),
            None,
            tokens_per_unit=tiny.SPECS["voxtral"].max_source_positions // 4,
        ),
        Family(
            "glmasr",
            lambda: (hf_ltbm.GlmAsrLTBMModel, hf_ltbm.GlmAsrLTBMForConditionalGeneration),
            "input_features_mask",
            tokens_per_unit=tiny.SPECS["glmasr"].max_source_positions // 4,
        ),
        Family(
            "qwen2_5_omni_thinker",
            _omni_classes,
            "feature_attention_mask",
            markers=True,
            image=True,
            config_kwargs={
                "audio_start_token_id": BOS_ID,
                "audio_end_token_id": EOS_ID,
                "image_token_index": IMAGE_ID,
                "video_token_index": VIDEO_ID,
            },
        ),
    )
}


#: The settings that promise upstream's behaviour: no setting, and every averaging method at keep ratio 1.0 (each
#: group then holds one token, so the merged tokens are the encoder's own).
SETTINGS: dict[str, Optional[dict]] = {"none": None} | {
    name: {"method": name, "keep_ratio": 1.0}
    for name in hf_ltbm.available_methods()
    if hf_ltbm.get_method_class(name).averages
}


class AudioModelTester:
    """The `model_tester` of one family under one merge setting (`None`: no `audio_token_merge` in the config)."""

    batch_size = 3
    is_training = True

    def __init__(self, parent: Any, family: Family, setting: Optional[dict]) -> None:
        self.parent, self.family, self.setting = parent, family, setting
        text = self.get_config().get_text_config()
        self.vocab_size = text.vocab_size
        self.hidden_size = text.hidden_size
        self.num_hidden_layers = text.num_hidden_layers
        self.num_attention_heads = text.num_attention_heads
        # text + optional markers + audio + optional image marker: the prompt the language model runs on
        self.seq_length = 4 + family.tokens_per_unit + 2 * family.markers + family.image * 3
        self.encoder_seq_length = self.seq_length
        if family.image:  # what the common image / video feature tests read for the vision encoder's depth
            depth = {"num_hidden_layers": self.get_config().vision_config.depth}
            self.vision_config = self.video_config = depth

    def get_config(self) -> Any:
        family = self.family
        kwargs = dict(family.config_kwargs)
        if family.name == "qwen2_5_omni_thinker":
            kwargs["audio_token_index"] = AUDIO_ID
        else:
            kwargs["audio_token_id"] = AUDIO_ID
        config = family.config(**kwargs)
        if family.name == "qwen2_5_omni_thinker":
            config.vision_start_token_id = VISION_START_ID
        if self.setting is not None:
            config.audio_token_merge = dict(self.setting)
        return config

    def prepare_config_and_inputs_for_common(self) -> tuple[Any, dict[str, Any]]:
        config = self.get_config()
        family, batch, frames = self.family, self.batch_size, tiny.SPECS[self.family.name].mel_frames
        generator = torch.Generator().manual_seed(0)
        text = torch.randint(FIRST_TEXT_ID, self.vocab_size, (batch, self.seq_length), generator=generator)
        input_ids = text.clone()
        start = 1
        if family.markers:
            input_ids[:, start] = BOS_ID
            start += 1
        input_ids[:, start : start + family.tokens_per_unit] = AUDIO_ID
        if family.markers:
            input_ids[:, start + family.tokens_per_unit] = EOS_ID
        attention_mask = torch.ones_like(input_ids)
        attention_mask[:, :1] = 0  # one left-padded position per row
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "input_features": torch.randn(batch, family.mel_bins, frames, generator=generator),
        }
        if family.mask_name is not None:
            inputs[family.mask_name] = torch.ones(batch, frames, dtype=torch.long)
        if family.image:
            # one image per row (a 2 x 2 grid of 14 px patches, one token after the 2 x 2 spatial merge)
            input_ids[:, -3] = VISION_START_ID
            input_ids[:, -2] = IMAGE_ID
            patch = config.vision_config
            size = patch.in_channels * patch.temporal_patch_size * patch.patch_size**2
            inputs["pixel_values"] = torch.randn(batch * 4, size, generator=generator)
            inputs["image_grid_thw"] = torch.tensor([[1, 2, 2]] * batch)
        return config, inputs
