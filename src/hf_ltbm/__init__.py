"""hf-ltbm: training-free audio-token compression for audio-language models in Hugging Face transformers.

`merge_tokens` and the method registry are pure PyTorch; `AudioTokenMergeConfig` is the setting a model carries.
"""

from .config import AudioTokenMergeConfig
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

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_WINDOW",
    "AudioTokenMergeConfig",
    "MergeResult",
    "TokenReducer",
    "available_methods",
    "build_method",
    "get_method_class",
    "merge_tokens",
    "output_length",
    "register_method",
]
