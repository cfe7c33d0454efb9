"""The pieces every backbone's tiny random model is made of (a word-level tokenizer built in-process, tiny text and
audio-encoder configs). `hf_ltbm.tiny` builds the tiny models from them and each backbone's declaration."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["tiny_audio_config", "tiny_text_config", "tiny_tokenizer", "whisper_features"]

_WORDS = (
    "a an the and of in on with by to from at near while then is are was be it this that there some one two many "
    "man woman child people dog cat bird birds car cars engine train bell music piano guitar drum drums voice voices "
    "speech speaking talks talking speaks sings singing laughs crowd water rain wind thunder door footsteps "
    "machine motor alarm siren phone clock ticking rings ringing beeps hum humming buzzing loud quiet soft distant "
    "background foreground briefly repeatedly continuously slowly quickly first later finally audio clip sound sounds "
    "noise noises what who where when which how many describe caption answer question yes no please word words "
    "english generate transcribe speaker language emotion instrument genre tempo happy sad calm . , ? : !"
).split()


def tiny_tokenizer(audio_tokens: list[str], named: Optional[dict[str, str]] = None):
    """A word-level fast tokenizer built in-process: `<pad> <s> </s> <unk>`, a small English vocabulary, the chat
    markers `<|im_start|> <|im_end|>` and the backbone's `audio_tokens` as special tokens; `named` gives some of them
    attribute names (`{"audio_token": "<|AUDIO|>"}`: `tokenizer.audio_token`, `tokenizer.audio_token_id`)."""
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


def tiny_text_config(tokenizer) -> dict[str, Any]:
    return dict(
        model_type="qwen2",
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 32: the smallest vLLM's CPU attention serves
        num_key_value_heads=1,
        max_position_embeddings=32768,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def tiny_audio_config(model_type: str) -> dict[str, Any]:
    return dict(
        model_type=model_type,
        num_mel_bins=128,
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        max_source_positions=1500,  # 3000 mel frames = 30 s
    )


def whisper_features() -> Any:
    """The audio front end of every tiny model: Whisper features at 16 kHz, 128 mel bins, 30 s windows."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=30)
