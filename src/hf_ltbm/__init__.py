"""hf-ltbm: training-free audio-token compression for audio-language models in Hugging Face transformers.

`merge_tokens` and the method registry are pure PyTorch; `AudioTokenMergeConfig` is the setting a model carries; the
model and processor classes (one file per backbone in `hf_ltbm.backbones`) make Qwen2-Audio, Audio Flamingo 3,
Music Flamingo, Voxtral and Qwen2.5-Omni's thinker run their language model on merged audio tokens;
`audio_token_merge` switches a loaded model's setting for a block. Importing the package registers the merging
classes with transformers' Auto classes and the "audio-text-to-text" pipeline.
"""

from . import compat  # noqa: F401  (first: a transformers release without the hooks used raises a clear ImportError)
from .audio import AudioInputError, load_audio
from .backbones import (
    AudioFlamingo3LTBMForConditionalGeneration,
    AudioFlamingo3LTBMModel,
    AudioFlamingo3LTBMProcessor,
    MusicFlamingoLTBMForConditionalGeneration,
    MusicFlamingoLTBMModel,
    MusicFlamingoLTBMProcessor,
    Qwen2_5OmniThinkerLTBMForConditionalGeneration,
    Qwen2_5OmniThinkerLTBMModel,
    Qwen2_5OmniThinkerLTBMProcessor,
    Qwen2AudioLTBMForConditionalGeneration,
    Qwen2AudioLTBMModel,
    Qwen2AudioLTBMProcessor,
    VoxtralLTBMForConditionalGeneration,
    VoxtralLTBMModel,
    VoxtralLTBMProcessor,
)
from .config import AudioTokenMergeConfig
from .context import audio_token_merge
from .merging import (
    DEFAULT_WINDOW,
    MergeResult,
    TokenReducer,
    available_methods,
    build_method,
    get_method_class,
    merge_tokens,
    output_length,
    register_method,
)
from .pipeline import AudioTextToTextPipeline, build_prompt
from .registration import register as _register

_register()

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_WINDOW",
    "AudioFlamingo3LTBMForConditionalGeneration",
    "AudioFlamingo3LTBMModel",
    "AudioFlamingo3LTBMProcessor",
    "AudioInputError",
    "AudioTextToTextPipeline",
    "AudioTokenMergeConfig",
    "MergeResult",
    "MusicFlamingoLTBMForConditionalGeneration",
    "MusicFlamingoLTBMModel",
    "MusicFlamingoLTBMProcessor",
    "Qwen2AudioLTBMForConditionalGeneration",
    "Qwen2AudioLTBMModel",
    "Qwen2AudioLTBMProcessor",
    "Qwen2_5OmniThinkerLTBMForConditionalGeneration",
    "Qwen2_5OmniThinkerLTBMModel",
    "Qwen2_5OmniThinkerLTBMProcessor",
    "TokenReducer",
    "VoxtralLTBMForConditionalGeneration",
    "VoxtralLTBMModel",
    "VoxtralLTBMProcessor",
    "audio_token_merge",
    "available_methods",
    "build_method",
    "build_prompt",
    "get_method_class",
    "load_audio",
    "merge_tokens",
    "output_length",
    "register_method",
]
