"""The supported audio-language model families, one file each, behind a registry (see `base.py`)."""

from .base import BACKBONES, Backbone, backbone_for, get_backbone, register_backbone

# isort: off
# Import order is registration order: `BACKBONES`, `TINY_MODELS` and the CLI list the paper's two backbones first.
from .qwen2_audio import (
    Qwen2AudioBackbone,
    Qwen2AudioLTBMForConditionalGeneration,
    Qwen2AudioLTBMModel,
    Qwen2AudioLTBMProcessor,
)
from .audioflamingo3 import (
    AudioFlamingo3Backbone,
    AudioFlamingo3LTBMForConditionalGeneration,
    AudioFlamingo3LTBMModel,
    AudioFlamingo3LTBMProcessor,
)
from .musicflamingo import (
    MusicFlamingoBackbone,
    MusicFlamingoLTBMForConditionalGeneration,
    MusicFlamingoLTBMModel,
    MusicFlamingoLTBMProcessor,
)
from .voxtral import (
    VoxtralBackbone,
    VoxtralLTBMForConditionalGeneration,
    VoxtralLTBMModel,
    VoxtralLTBMProcessor,
)

from .qwen2_5_omni import (
    Qwen2_5OmniBackbone,
    Qwen2_5OmniThinkerLTBMForConditionalGeneration,
    Qwen2_5OmniThinkerLTBMModel,
    Qwen2_5OmniThinkerLTBMProcessor,
)

# isort: on

__all__ = [
    "BACKBONES",
    "AudioFlamingo3Backbone",
    "AudioFlamingo3LTBMForConditionalGeneration",
    "AudioFlamingo3LTBMModel",
    "AudioFlamingo3LTBMProcessor",
    "Backbone",
    "MusicFlamingoBackbone",
    "MusicFlamingoLTBMForConditionalGeneration",
    "MusicFlamingoLTBMModel",
    "MusicFlamingoLTBMProcessor",
    "Qwen2AudioBackbone",
    "Qwen2_5OmniBackbone",
    "Qwen2_5OmniThinkerLTBMForConditionalGeneration",
    "Qwen2_5OmniThinkerLTBMModel",
    "Qwen2_5OmniThinkerLTBMProcessor",
    "Qwen2AudioLTBMForConditionalGeneration",
    "Qwen2AudioLTBMModel",
    "Qwen2AudioLTBMProcessor",
    "VoxtralBackbone",
    "VoxtralLTBMForConditionalGeneration",
    "VoxtralLTBMModel",
    "VoxtralLTBMProcessor",
    "backbone_for",
    "get_backbone",
    "register_backbone",
]
