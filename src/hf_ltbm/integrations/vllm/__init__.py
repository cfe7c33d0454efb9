"""vLLM plugin: serves Qwen2-Audio, Audio Flamingo 3, Voxtral and Qwen2.5-Omni's thinker with merged audio tokens.

Installed with hf-ltbm, the plugin is found by vLLM through the `vllm.general_plugins` entry point; `register()` only
registers the merging model classes (each with its multimodal processor) under the architecture names of the stock
ones, lazily, so nothing here imports vLLM before vLLM asks for a model. A checkpoint without a merge setting is
served exactly as stock vLLM serves it.

Settings, in order of precedence: `mm_processor_kwargs={"audio_token_merge": ...}` of a request (also through the
OpenAI server's `extra_body`), the engine's `mm_processor_kwargs`, then `audio_token_merge` in the model config (a
folder saved by hf-ltbm, or `hf_overrides={"audio_token_merge": ...}`). See `docs/serving.md`.
"""

from __future__ import annotations

__all__ = ["architectures", "register"]


def architectures() -> dict[str, str]:
    """vLLM architecture name -> `"module:Class"` of the merging class that serves it, from each backbone's
    declaration (`Backbone.vllm_architectures`)."""
    from ...backbones import BACKBONES

    return {arch: backbone.vllm_class for backbone in BACKBONES.values() for arch in backbone.vllm_architectures}


def register() -> None:
    """The `vllm.general_plugins` entry point: registers the merging classes (vLLM may call it in every process). It
    imports only the backbones' declarations; vLLM imports a merging class when it serves that architecture."""
    from vllm import ModelRegistry

    for architecture, target in architectures().items():
        ModelRegistry.register_model(architecture, target)
