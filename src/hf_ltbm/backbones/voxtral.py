"""Voxtral: one merge per 30 s chunk (375 tokens: the encoder's 1500 frames, 4 concatenated per token).

mistral-common pads every clip to whole 30 s chunks and writes `[BEGIN_AUDIO]` + 375 `[AUDIO]` per chunk in
`apply_chat_template`; there is no feature mask (every chunk is whole, silence included). A chunk of `N = 375`
tokens becomes `output_length(N)` tokens.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any, Optional

from .base import Backbone, BackboneClasses, class_getter, register_backbone
from .tiny_parts import TinySpec, check_spec, tiny_text_config, whisper_features

__all__ = [
    "VoxtralBackbone",
    "VoxtralLTBMForConditionalGeneration",
    "VoxtralLTBMModel",
    "VoxtralLTBMProcessor",
    "tiny_tekken_tokenizer",
]


def _build() -> BackboneClasses:
    """Makes Voxtral's merging classes (`VoxtralBackbone.build`)."""
    import torch
    from transformers import BatchFeature, VoxtralProcessor
    from transformers.models.voxtral.modeling_voxtral import (
        VoxtralForConditionalGeneration,
        VoxtralModel,
        VoxtralPreTrainedModel,
    )

    from ..compat import can_return_tuple, mirrors
    from ..config import MergeSetting
    from ..models.compaction import shorten_audio_runs
    from ..models.generation import AudioTokenMergeGenerationMixin
    from ..models.model import AudioTokenMergeModelMixin
    from ..processing import MergeSettingProcessorMixin

    class VoxtralLTBMModel(AudioTokenMergeModelMixin, VoxtralModel):
        """`VoxtralModel` whose language model runs on merged audio tokens (one merge per 30 s chunk).

        Accepts an extra `audio_token_merge` argument, stored in `config.audio_token_merge` (see
        `Qwen2AudioLTBMModel`).
        """

        _upstream_class = VoxtralModel

        def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor, **kwargs: Any) -> Any:
            return self.audio_tower(input_features, return_dict=True, **kwargs)

        @can_return_tuple
        def get_audio_features(self, input_features: torch.Tensor, **kwargs: Any):
            """Upstream `get_audio_features` when merging is off; otherwise encodes each chunk, merges it and projects
            it.

            Args:
                input_features (`torch.FloatTensor` of shape `[num_chunks, num_mel_bins, 3000]`): log-mel features.

            Returns:
                Merging on: `AudioTokenMergeOutput` with `pooler_output [sum(M_c), hidden_size]` (chunks concatenated),
                `audio_token_counts [num_chunks]` (`M_c`) and `num_input_tokens [num_chunks]` (375 each).
            """
            if self.audio_token_merge is None:
                return VoxtralModel.get_audio_features(self, input_features, **kwargs)
            return self._merged_audio_features(
                input_features, self._unit_mask({"input_features": input_features}), **kwargs
            )

        def _placeholder_name(self) -> str:
            return "[AUDIO]"

    class VoxtralLTBMForConditionalGeneration(AudioTokenMergeGenerationMixin, VoxtralForConditionalGeneration):
        """`VoxtralForConditionalGeneration` whose language model runs on merged audio tokens (per 30 s chunk).

        Works with prompts holding `M` placeholders per chunk and with mistral-common's prompts (375 per chunk,
        compacted at prefill). With no merge setting it is the upstream class.
        """

        _upstream_class = VoxtralForConditionalGeneration
        _model_class = VoxtralLTBMModel
        _pretrained_base = VoxtralPreTrainedModel

    class VoxtralLTBMProcessor(MergeSettingProcessorMixin, VoxtralProcessor):
        """`VoxtralProcessor` whose `apply_chat_template` and `apply_transcription_request` emit `output_length(375)`
        `[AUDIO]` placeholders per 30 s chunk: mistral-common writes 375 per chunk, and the runs are shortened after it
        (it has no hook for the count). `input_features [num_chunks, num_mel_bins, 3000]` are the upstream ones.

        Args:
            feature_extractor, tokenizer: as for `VoxtralProcessor`.
            audio_token_merge (`str`, `dict` or `AudioTokenMergeConfig`, *optional*): the model's merge setting.
        """

        _upstream_class = VoxtralProcessor

        def __init__(self, feature_extractor, tokenizer, audio_token_merge: MergeSetting = None):
            self._init_setting(audio_token_merge)
            super().__init__(feature_extractor, tokenizer)

        def _duration_limit(self) -> tuple[str, str]:
            raise AssertionError("Voxtral takes audio of any length (in 30 s chunks)")

        def _merged(self, output: Any) -> Any:
            if self.audio_token_merge is None or not isinstance(output, (dict, BatchFeature)):
                return output
            if "input_ids" not in output or output.get("input_features") is None:
                return output
            as_tensors = isinstance(output["input_ids"], torch.Tensor)
            input_ids = torch.as_tensor(output["input_ids"])
            attention_mask = torch.as_tensor(output.get("attention_mask", torch.ones_like(input_ids)))
            single = input_ids.dim() == 1
            if single:
                input_ids, attention_mask = input_ids[None], attention_mask[None]
            chunks = int(torch.as_tensor(output["input_features"]).shape[0])
            total = int((input_ids == self.audio_token_id).sum())
            per_chunk = total // chunks
            ids, mask = shorten_audio_runs(
                input_ids,
                attention_mask,
                self.audio_token_id,
                per_chunk,
                self.merged_length(per_chunk),
                self.tokenizer.pad_token_id,
            )
            if single:
                ids, mask = ids[0], mask[0]
            # the caller's format: tensors stay tensors, lists stay lists
            output["input_ids"] = ids if as_tensors else ids.tolist()
            output["attention_mask"] = mask if as_tensors else mask.tolist()
            return output

        @mirrors(VoxtralProcessor.apply_chat_template)
        def apply_chat_template(self, *args: Any, **kwargs: Any):
            """Upstream `apply_chat_template` (same signature); with a merge setting, tokenised outputs hold the merged
            number of `[AUDIO]` placeholders per chunk."""
            return self._merged(super().apply_chat_template(*args, **kwargs))

        @mirrors(VoxtralProcessor.apply_transcription_request)
        def apply_transcription_request(self, *args: Any, **kwargs: Any):
            """Upstream `apply_transcription_request` (same signature), with the merged placeholder count."""
            return self._merged(super().apply_transcription_request(*args, **kwargs))

    return BackboneClasses(VoxtralLTBMModel, VoxtralLTBMForConditionalGeneration, VoxtralLTBMProcessor)


# The control tokens mistral-common looks up, at the ids of Voxtral's tekken.json.
_SPECIALS = dict(
    enumerate(
        "<unk> <s> </s> [INST] [/INST] [AVAILABLE_TOOLS] [/AVAILABLE_TOOLS] [TOOL_RESULTS] [/TOOL_RESULTS] "
        "[TOOL_CALLS] [IMG] <pad> [IMG_BREAK] [IMG_END] [PREFIX] [MIDDLE] [SUFFIX] [SYSTEM_PROMPT] [/SYSTEM_PROMPT] "
        "[TOOL_CONTENT]".split()
    )
)
_SPECIALS.update({24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 34: "[TRANSCRIBE]"})


def tiny_tekken_tokenizer(mel_bins: int = 128) -> Any:
    """A tiny mistral-common (tekken) tokenizer built offline: the 256 byte tokens after Voxtral's 100 control tokens
    (`[AUDIO]` = 24, `[BEGIN_AUDIO]` = 25) and Voxtral's audio settings (16 kHz, 12.5 tokens per second, 30 s chunks,
    `mel_bins` mel bins). Written once to a file named by its content in the temporary folder (mistral-common reads
    tokenizers from files). Needs `mistral-common[audio]`."""
    try:
        from transformers.tokenization_mistral_common import MistralCommonBackend
    except ImportError as err:  # pragma: no cover - transformers without mistral-common support
        raise ImportError("Voxtral's tokenizer needs mistral-common: pip install 'mistral-common[audio]'.") from err
    tekken = {
        "config": {
            "pattern": r"\p{L}+|\p{N}|\s+|[^\s\p{L}\p{N}]+",
            "num_vocab_tokens": 256,
            "default_vocab_size": 356,
            "default_num_special_tokens": 100,
            "version": "v7",
        },
        "vocab": [
            {"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode(), "token_str": None} for i in range(256)
        ],
        "special_tokens": [
            {"rank": i, "token_str": _SPECIALS.get(i, f"<SPECIAL_{i}>"), "is_control": True} for i in range(100)
        ],
        "audio": {
            "sampling_rate": 16000,
            "frame_rate": 12.5,
            "chunk_length_s": 30.0,
            "audio_encoding_config": {"num_mel_bins": mel_bins, "hop_length": 160, "window_size": 400},
        },
    }
    text = json.dumps(tekken, sort_keys=True)
    folder = Path(tempfile.gettempdir()) / f"hf_ltbm_tiny_tekken_{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    folder.mkdir(exist_ok=True)
    path = folder / "tekken.json"
    if not path.exists():
        path.write_text(text, encoding="utf-8")
    try:
        return MistralCommonBackend(tokenizer_path=str(path))
    except ImportError as err:
        raise ImportError("Voxtral's tokenizer needs mistral-common: pip install 'mistral-common[audio]'.") from err


def _base64_wav(wave: Any, sampling_rate: int) -> str:
    import numpy as np
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(wave, dtype=np.float32), sampling_rate, format="WAV", subtype="FLOAT")
    return base64.b64encode(buffer.getvalue()).decode()


# transformers' module names -> Mistral's, in the text model and in the audio encoder
_MISTRAL_TEXT_NAMES = (
    ("embed_tokens", "tok_embeddings"),
    ("self_attn.q_proj", "attention.wq"),
    ("self_attn.k_proj", "attention.wk"),
    ("self_attn.v_proj", "attention.wv"),
    ("self_attn.o_proj", "attention.wo"),
    ("input_layernorm", "attention_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "feed_forward.w1"),
    ("mlp.down_proj", "feed_forward.w2"),
    ("mlp.up_proj", "feed_forward.w3"),
)
_MISTRAL_AUDIO_NAMES = (
    ("conv1", "conv_layers.0"),
    ("conv2", "conv_layers.1"),
    ("self_attn_layer_norm", "attention_norm"),
    ("final_layer_norm", "ffn_norm"),
    ("self_attn.q_proj", "attention.wq"),
    ("self_attn.k_proj", "attention.wk"),
    ("self_attn.v_proj", "attention.wv"),
    ("self_attn.out_proj", "attention.wo"),
    ("fc1", "feed_forward.w1"),
    ("fc2", "feed_forward.w2"),
)


def _mistral_weight(name: str, weight: Any, text: Any) -> tuple[Optional[str], Any]:
    """The name and value of a `VoxtralForConditionalGeneration` weight in Mistral's format (`None`: not saved)."""
    if name == "lm_head.weight":
        return "output.weight", weight
    if name.startswith("model.language_model."):
        name = name.removeprefix("model.language_model.")
        heads = {".q_proj.": text.num_attention_heads, ".k_proj.": text.num_key_value_heads}
        for part, count in heads.items():
            if part in name:  # Mistral's rotary order: the inverse of vLLM's `maybe_remap_mistral` permutation
                shape = weight.shape
                weight = weight.view(count, 2, shape[0] // count // 2, -1).transpose(1, 2).reshape(shape)
        for old, new in _MISTRAL_TEXT_NAMES:
            name = name.replace(old, new)
        return name, weight
    if name.startswith("model.multi_modal_projector."):
        name = name.removeprefix("model.multi_modal_projector.").replace("linear_1", "0").replace("linear_2", "2")
        return f"mm_whisper_embeddings.audio_language_projection.{name}", weight
    if name.startswith("model.audio_tower.") and "embed_positions" not in name:  # vLLM builds the sinusoids
        name = name.removeprefix("model.audio_tower.")
        if name.startswith(("layers.", "layer_norm.")):  # the layers and the last norm
            name = "transformer." + name.replace("layer_norm.", "norm.", name.startswith("layer_norm."))
        for old, new in _MISTRAL_AUDIO_NAMES:
            name = name.replace(old, new)
        return f"mm_whisper_embeddings.whisper_encoder.{name}", weight
    return None, weight


def _save_mistral_format(model: Any, folder: Path) -> None:
    """Adds Mistral's format of a `VoxtralForConditionalGeneration` to `folder` (`params.json`,
    `consolidated.safetensors`), as Voxtral's releases hold it: the names vLLM maps back, the text attention's
    query/key rows in Mistral's rotary order (vLLM permutes them on loading)."""
    from safetensors.torch import save_file

    text, audio = model.config.text_config, model.config.audio_config
    weights = {}
    for name, weight in model.state_dict().items():
        name, weight = _mistral_weight(name, weight.detach().clone().contiguous(), text)
        if name is not None:
            weights[name] = weight.contiguous()
    save_file(weights, folder / "consolidated.safetensors")
    encoding = {"sampling_rate": 16000, "frame_rate": 12.5, "num_mel_bins": audio.num_mel_bins}
    encoder = {
        "audio_encoding_args": {**encoding, "hop_length": 160, "window_size": 400},
        "dim": audio.hidden_size,
        "n_layers": audio.num_hidden_layers,
        "head_dim": audio.hidden_size // audio.num_attention_heads,
        "hidden_dim": audio.intermediate_size,
        "n_heads": audio.num_attention_heads,
        "vocab_size": audio.vocab_size,
        "max_source_positions": audio.max_source_positions,
    }
    downsample = {"downsample_factor": audio.intermediate_size // audio.hidden_size}
    params = {
        "dim": text.hidden_size,
        "n_layers": text.num_hidden_layers,
        "head_dim": text.head_dim,
        "hidden_dim": text.intermediate_size,
        "n_heads": text.num_attention_heads,
        "n_kv_heads": text.num_key_value_heads,
        "rope_theta": text.rope_parameters["rope_theta"],
        "norm_eps": text.rms_norm_eps,
        "vocab_size": text.vocab_size,
        "tied_embeddings": text.tie_word_embeddings,
        "max_position_embeddings": text.max_position_embeddings,
        "multimodal": {"whisper_model_args": {"encoder_args": encoder, "downsample_args": downsample}},
    }
    (folder / "params.json").write_text(json.dumps(params, indent=2))


@register_backbone
class VoxtralBackbone(Backbone):
    """Voxtral (`mistralai/Voxtral-Mini-3B-2507`): one unit per started 30 s chunk, prompts written by
    mistral-common from chats."""

    model_type = "voxtral"
    display_name = "Voxtral"
    default_checkpoint = "mistralai/Voxtral-Mini-3B-2507"
    class_prefix = "Voxtral"
    config_name = "VoxtralConfig"
    processor_name = "VoxtralProcessor"
    feature_mask = None
    extra_auto_classes = ("AutoModelForMultimodalLM", "AutoModelForSpeechSeq2Seq")
    required_hooks = (
        ("transformers", "VoxtralModel"),
        ("transformers", "VoxtralProcessor.apply_chat_template"),
        ("transformers", "VoxtralProcessor.apply_transcription_request"),
    )
    vllm_architectures = ("VoxtralForConditionalGeneration",)
    tiny_encoder_type = "voxtral_encoder"
    tiny_audio_tokens = ("[AUDIO]",)
    tiny_chat_template = ""
    chat_only = True
    mel_frames_per_token = 8  # 12.5 tokens per second
    stacked_frames = 4  # the projector reads 4 encoder frames as one token
    unit_seconds = 30.0  # mistral-common pads every clip to whole 30 s chunks (its audio config's `chunk_length_s`)
    max_units = None  # any length: one unit per started chunk
    whole_units = True  # every chunk is encoded whole, silence included (no feature mask): 375 tokens

    build = staticmethod(_build)

    def encode_chats(self, processor: Any, conversations: list[list[dict]], sampling_rate: int) -> Any:
        """mistral-common takes audio as files or base64 only: each waveform goes in as base64 WAV."""
        converted = []
        for messages in conversations:
            turns = []
            for message in messages:
                content = message["content"]
                if isinstance(content, (list, tuple)):
                    content = [
                        {"type": "audio", "base64": _base64_wav(part["audio"], sampling_rate)}
                        if isinstance(part, dict) and part.get("type") == "audio"
                        else part
                        for part in content
                    ]
                turns.append({**message, "content": content})
            converted.append(turns)
        from ..compat import chat_template_processor_kwargs  # needs transformers, as `processor` does

        padding = chat_template_processor_kwargs(processor.apply_chat_template, padding=True)
        return processor.apply_chat_template(
            converted, tokenize=True, return_dict=True, return_tensors="pt", **padding
        )

    def tiny_processor_parts(self, spec: TinySpec) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Whisper features and a tiny tekken tokenizer (`tiny_tekken_tokenizer`) with `spec`'s mel bins. Only 30 s
        windows: `VoxtralProcessor` cuts features into 30 s chunks whatever its feature extractor says."""
        spec = _voxtral_spec(spec)
        if spec.window_seconds != 30:
            raise ValueError(
                "Voxtral's tiny processor takes only `window_seconds=30` (VoxtralProcessor cuts features into 30 s "
                f"chunks), got {spec.window_seconds}; its config (`build_tiny_config`) takes any even window."
            )
        return (whisper_features(spec), tiny_tekken_tokenizer(spec.mel_bins)), {}

    def tiny_config(self, processor: Any = None, spec: Optional[TinySpec] = None, **config_kwargs: Any) -> Any:
        """Voxtral's encoder (4 frames concatenated per token) and a Llama language model, of `spec`'s sizes; the
        vocabulary and ids of `processor`'s tokenizer (`None`: the tiny tekken tokenizer)."""
        spec = _voxtral_spec(spec)
        tokenizer = processor.tokenizer if processor is not None else tiny_tekken_tokenizer(spec.mel_bins)
        text = tiny_text_config(tokenizer, spec)
        text.update(model_type="llama", head_dim=spec.head_size)
        audio = dict(
            hidden_size=spec.audio_hidden_size,
            intermediate_size=4 * spec.audio_hidden_size,  # 4 frames per token
            num_hidden_layers=spec.audio_layers,
            num_attention_heads=spec.audio_attention_heads,
            num_mel_bins=spec.mel_bins,
            max_source_positions=spec.max_source_positions,
        )
        kwargs = {"audio_token_id": tokenizer.convert_tokens_to_ids("[AUDIO]"), **config_kwargs}
        return self.config_class(audio_config=audio, text_config=text, **kwargs)

    def save_tiny(self, model: Any, processor: Any, folder: Path) -> None:
        """Voxtral's releases hold two formats, and vLLM reads Mistral's: `folder` gets transformers' files and
        Mistral's (`params.json`, `consolidated.safetensors`, next to the tokenizer's `tekken.json`). The audio
        encoder's position embeddings are saved as the sinusoids releases hold and vLLM builds (`model` is left as
        it is)."""
        import torch
        from transformers.models.whisper.modeling_whisper import sinusoids

        model = copy.deepcopy(model)
        positions = model.model.audio_tower.embed_positions.weight
        with torch.no_grad():
            positions.copy_(sinusoids(*positions.shape))
        super().save_tiny(model, processor, folder)
        _save_mistral_format(model, Path(folder))


def _voxtral_spec(spec: Optional[TinySpec]) -> TinySpec:
    spec = check_spec(spec)
    if spec.window_seconds % 2:
        raise ValueError(
            f"Voxtral's tiny model needs an even `window_seconds` (12.5 audio tokens per second), got "
            f"{spec.window_seconds}."
        )
    return spec


__getattr__ = class_getter(VoxtralBackbone)  # the merging classes, made on first use
