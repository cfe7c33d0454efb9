"""hf-ltbm: training-free audio-token compression for audio-language models in Hugging Face transformers.

`merge_tokens` and the method registry are pure PyTorch; `AudioTokenMergeConfig` is the setting a model carries; the
model and processor classes (one module per backbone in `hf_ltbm.backbones`) make Qwen2-Audio, Audio Flamingo 3,
Music Flamingo, Voxtral and Qwen2.5-Omni's thinker run their language model on merged audio tokens;
`audio_token_merge` switches a loaded model's setting for a block.

Importing the package is cheap: it imports neither torch nor transformers, and the names below are loaded when first
used. Once transformers' Auto classes (and pipelines) are imported, before or after `import hf_ltbm`, the merging
classes are registered with them and with the "audio-text-to-text" pipeline; a backbone's classes are made when it
is first used.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .lazy import when_imported
from .version import __version__ as __version__

#: Name -> the module (relative to this package) that defines it.
_EXPORTS = {
    "AudioInputError": ".audio",
    "load_audio": ".audio",
    "AudioTokenMergeConfig": ".config",
    "audio_token_merge": ".context",
    "AudioTextToTextPipeline": ".pipeline",
    "build_prompt": ".pipeline",
    **dict.fromkeys(
        (
            "DEFAULT_WINDOW",
            "MergeResult",
            "TokenReducer",
            "available_methods",
            "build_method",
            "get_method_class",
            "merge_tokens",
            "output_length",
            "register_method",
        ),
        ".merging",
    ),
}


def _backbone_classes() -> list[str]:
    from .backbones import exported_classes

    return list(exported_classes())


def __getattr__(name: str) -> Any:
    if name == "__all__":  # `from hf_ltbm import *`: every export, the backbones' classes from their registry
        return sorted([*_EXPORTS, *_backbone_classes()])
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _backbone_classes():
        value = getattr(importlib.import_module(".backbones", __name__), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule: `hf_ltbm.tiny`
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_backbone_classes()))


def _register(what: str) -> Any:
    def callback(module: Any) -> None:
        from . import registration

        getattr(registration, what)(module)

    return callback


when_imported("transformers.models.auto.modeling_auto", _register("register_models"))
when_imported("transformers.models.auto.processing_auto", _register("register_processors"))
when_imported("transformers.pipelines", _register("register_pipeline"))
