"""The pieces every backbone's tiny random model is made of (its sizes, `TinySpec`; a word-level tokenizer built
in-process; tiny text and audio-encoder configs; Whisper features). `hf_ltbm.tiny` builds the tiny models from them
and each backbone's declaration."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

__all__ = [
    "DEFAULT_TINY_SPEC",
    "TinySpec",
    "tiny_audio_config",
    "tiny_text_config",
    "tiny_tokenizer",
    "whisper_features",
]

_WORDS = (
    "a an the and of in on with by to from at near while then is are was be it this that there some one two many "
    "man woman child people dog cat bird birds car cars engine train bell music piano guitar drum drums voice voices "
    "speech speaking talks talking speaks sings singing laughs crowd water rain wind thunder door footsteps "
    "machine motor alarm siren phone clock ticking rings ringing beeps hum humming buzzing loud quiet soft distant "
    "background foreground briefly repeatedly continuously slowly quickly first later finally audio clip sound sounds "
    "noise noises what who where when which how many describe caption answer question yes no please word words "
    "english generate transcribe speaker language emotion instrument genre tempo happy sad calm . , ? : !"
).split()

#: Mel frames per second of Whisper features (a 160-sample hop at 16 kHz), and encoder positions per second (the
#: stride-2 convolution halves them).
MEL_FRAMES_PER_SECOND = 100
ENCODER_POSITIONS_PER_SECOND = 50


@dataclass(frozen=True)
class TinySpec:
    """The sizes of a tiny random model (`hf_ltbm.tiny.build_tiny_model(name, spec=...)`); the defaults are the tiny
    models the demo and the examples use. Every field is a positive `int`; a bad value raises a `ValueError` naming
    the field.

    Attributes:
        window_seconds: seconds of audio per encoder window (30, as the released checkpoints: 3000 mel frames, 1500
            encoder positions, 750 audio tokens). Sets the Whisper features' `chunk_length` and the audio encoder's
            `max_source_positions` (`50 * window_seconds`); a window holds `25 * window_seconds` audio tokens.
            Voxtral's encoder chunk holds `12.5 * window_seconds` (an even number is needed), and its processor
            takes only 30 s (`VoxtralProcessor` cuts features into 30 s chunks).
        mel_bins: mel bins of the features and of the audio encoder's input (128).
        hidden_size: the language model's width (64); its MLP is twice as wide. Qwen2.5-Omni's audio and vision
            outputs have this width and its vision encoder half of it.
        num_attention_heads: the language model's attention heads (2: head size 32, the smallest vLLM's CPU attention
            serves); `hidden_size` must be a multiple of it, with an even head size (rotary positions).
        num_key_value_heads: its key/value heads (1); must divide `num_attention_heads`.
        num_hidden_layers: its layers (2).
        max_position_embeddings: its `max_position_embeddings` (32768), which rotary scaling is relative to.
        audio_hidden_size: the audio encoder's width (64; `d_model`); its MLP is twice as wide (Voxtral: 4 times, the
            4 frames its projector reads per token).
        audio_attention_heads: the audio encoder's attention heads (4); must divide `audio_hidden_size`.
        audio_layers: the audio encoder's layers (2).
    """

    window_seconds: int = 30
    mel_bins: int = 128
    hidden_size: int = 64
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    num_hidden_layers: int = 2
    max_position_embeddings: int = 32768
    audio_hidden_size: int = 64
    audio_attention_heads: int = 4
    audio_layers: int = 2

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TinySpec: `{field.name}` must be a positive int, got {value!r}.")
        self._check_divides("num_attention_heads", "hidden_size")
        self._check_divides("num_key_value_heads", "num_attention_heads")
        self._check_divides("audio_attention_heads", "audio_hidden_size")
        if self.head_size % 2:
            raise ValueError(
                f"TinySpec: `hidden_size` / `num_attention_heads` must be an even head size (rotary positions), got "
                f"{self.hidden_size} / {self.num_attention_heads} = {self.head_size}."
            )

    def _check_divides(self, divisor: str, name: str) -> None:
        if getattr(self, name) % getattr(self, divisor):
            raise ValueError(
                f"TinySpec: `{name}` ({getattr(self, name)}) must be a multiple of `{divisor}` "
                f"({getattr(self, divisor)})."
            )

    @property
    def head_size(self) -> int:
        """The language model's attention head size (`hidden_size // num_attention_heads`)."""
        return self.hidden_size // self.num_attention_heads

    @property
    def max_source_positions(self) -> int:
        """The audio encoder's positions per window (after its stride-2 convolution): 50 per second."""
        return ENCODER_POSITIONS_PER_SECOND * self.window_seconds

    @property
    def mel_frames(self) -> int:
        """Mel frames per window (100 per second)."""
        return MEL_FRAMES_PER_SECOND * self.window_seconds


DEFAULT_TINY_SPEC = TinySpec()
"""The sizes of the default tiny models (`TinySpec()`)."""


def check_spec(spec: Any) -> TinySpec:
    """`spec`, or the default sizes for `None`; a `TypeError` names anything else."""
    if spec is None:
        return DEFAULT_TINY_SPEC
    if not isinstance(spec, TinySpec):
        raise TypeError(f"`spec` must be a TinySpec or None, got {type(spec).__name__}: {spec!r}.")
    return spec


def tiny_tokenizer(audio_tokens: list[str], named: Optional[dict[str, str]] = None) -> Any:
    """A word-level fast tokenizer built in-process: `<pad> <s> </s> <unk>` (ids 0 to 3), the chat markers
    `<|im_start|> <|im_end|>` (4, 5), the backbone's `audio_tokens` as special tokens (from 6 on: the placeholder is
    6), then a small English vocabulary; `named` gives some of them attribute names (`{"audio_token": "<|AUDIO|>"}`:
    `tokenizer.audio_token`, `tokenizer.audio_token_id`). Pads on the left."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", *audio_tokens]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(_WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        additional_special_tokens=specials[4:],
        padding_side="left",
        **({"extra_special_tokens": named} if named else {}),
    )


def tiny_text_config(tokenizer: Any, spec: Optional[TinySpec] = None) -> dict[str, Any]:
    """The tiny language model's config arguments (a Qwen2 decoder of `spec`'s sizes, the vocabulary and special
    token ids of `tokenizer`, untied embeddings)."""
    spec = check_spec(spec)
    return dict(
        model_type="qwen2",
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=2 * spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def tiny_audio_config(model_type: str, spec: Optional[TinySpec] = None) -> dict[str, Any]:
    """The tiny Whisper-style audio encoder's config arguments (`model_type`: the family's encoder type): `spec`'s
    mel bins and sizes, `max_source_positions` of one `spec.window_seconds` window."""
    spec = check_spec(spec)
    return dict(
        model_type=model_type,
        num_mel_bins=spec.mel_bins,
        d_model=spec.audio_hidden_size,
        encoder_layers=spec.audio_layers,
        encoder_attention_heads=spec.audio_attention_heads,
        encoder_ffn_dim=2 * spec.audio_hidden_size,
        max_source_positions=spec.max_source_positions,  # 2 mel frames each: 1500 = 30 s
    )


def whisper_features(spec: Optional[TinySpec] = None) -> Any:
    """The audio front end of every tiny model: Whisper features at 16 kHz with `spec.mel_bins` mel bins (128) and
    `spec.window_seconds` windows (30 s)."""
    from transformers import WhisperFeatureExtractor

    spec = check_spec(spec)
    return WhisperFeatureExtractor(feature_size=spec.mel_bins, sampling_rate=16000, chunk_length=spec.window_seconds)
