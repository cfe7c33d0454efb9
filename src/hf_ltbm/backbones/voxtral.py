"""Voxtral: one merge per 30 s chunk (375 tokens: the encoder's 1500 frames, 4 concatenated per token).

mistral-common pads every clip to whole 30 s chunks and writes `[BEGIN_AUDIO]` + 375 `[AUDIO]` per chunk in
`apply_chat_template`; there is no feature mask (every chunk is whole, silence included). A chunk of `N = 375`
tokens becomes `output_length(N)` tokens.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from .base import Backbone, BackboneClasses, class_getter, register_backbone
from .tiny_parts import tiny_text_config, whisper_features

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
    from ..models.units import MergeInputs, merge_inputs_at_token_rate
    from ..processing import MergeSettingProcessorMixin

    class VoxtralLTBMModel(AudioTokenMergeModelMixin, VoxtralModel):
        """`VoxtralModel` whose language model runs on merged audio tokens (one merge per 30 s chunk).

        Accepts an extra `audio_token_merge` argument, stored in `config.audio_token_merge` (see
        `Qwen2AudioLTBMModel`).
        """

        _upstream_class = VoxtralModel

        @property
        def _frames_per_token(self) -> int:
            audio = self.config.audio_config
            return audio.intermediate_size // audio.hidden_size  # 4: the encoder frames concatenated into one token

        def _audio_unit_lengths(self, feature_mask: torch.Tensor) -> torch.LongTensor:
            frames = (feature_mask.sum(-1).long() - 1) // 2 + 1  # after the stride-2 convolution
            return frames // self._frames_per_token

        def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor, **kwargs: Any) -> Any:
            return self.audio_tower(input_features, return_dict=True, **kwargs)

        def _token_states(self, encoded: Any) -> torch.Tensor:
            hidden = encoded.last_hidden_state  # `_frames_per_token` encoder frames concatenated into each token
            return hidden.reshape(hidden.shape[0], -1, self.config.audio_config.intermediate_size)

        def _merge_inputs_at_token_rate(self, inputs: MergeInputs) -> MergeInputs:
            return merge_inputs_at_token_rate(inputs, self._frames_per_token)

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


def tiny_tekken_tokenizer() -> Any:
    """A tiny mistral-common (tekken) tokenizer built offline: the 256 byte tokens after Voxtral's 100 control tokens
    (`[AUDIO]` = 24, `[BEGIN_AUDIO]` = 25) and Voxtral's audio settings (16 kHz, 12.5 tokens per second, 30 s chunks).
    Written once to a file named by its content in the temporary folder (mistral-common reads tokenizers from files).
    Needs `mistral-common[audio]`."""
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
            "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
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

    def tiny_processor(self, audio_token_merge: Any) -> Any:
        return self.processor(whisper_features(), tiny_tekken_tokenizer(), audio_token_merge=audio_token_merge)

    def tiny_config(self, processor: Any) -> Any:
        text = tiny_text_config(processor.tokenizer)
        text.update(model_type="llama", head_dim=32)
        return self.config_class(
            audio_config=dict(
                hidden_size=64,
                intermediate_size=256,  # 4 frames per token
                num_hidden_layers=2,
                num_attention_heads=4,
                num_mel_bins=128,
                max_source_positions=1500,
            ),
            text_config=text,
            audio_token_id=processor.audio_token_id,
        )


__getattr__ = class_getter(VoxtralBackbone)  # the merging classes, made on first use
