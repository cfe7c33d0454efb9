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

__all__ = ["ARCHITECTURES", "register"]

#: vLLM architecture name -> the merging class that serves it.
ARCHITECTURES = {
    "Qwen2AudioForConditionalGeneration": (
        "hf_ltbm.integrations.vllm.qwen2_audio:Qwen2AudioLTBMForConditionalGeneration"
    ),
    "AudioFlamingo3ForConditionalGeneration": (
        "hf_ltbm.integrations.vllm.audioflamingo3:AudioFlamingo3LTBMForConditionalGeneration"
    ),
    "VoxtralForConditionalGeneration": "hf_ltbm.integrations.vllm.voxtral:VoxtralLTBMForConditionalGeneration",
    # Qwen2.5-Omni's releases name the whole model (thinker, talker, vocoder); vLLM serves its thinker for both
    "Qwen2_5OmniModel": "hf_ltbm.integrations.vllm.qwen2_5_omni:Qwen2_5OmniThinkerLTBMForConditionalGeneration",
    "Qwen2_5OmniForConditionalGeneration": (
        "hf_ltbm.integrations.vllm.qwen2_5_omni:Qwen2_5OmniThinkerLTBMForConditionalGeneration"
    ),
}


def register() -> None:
    """The `vllm.general_plugins` entry point: registers the merging classes (vLLM may call it in every process)."""
    from vllm import ModelRegistry

    for architecture, target in ARCHITECTURES.items():
        ModelRegistry.register_model(architecture, target)
