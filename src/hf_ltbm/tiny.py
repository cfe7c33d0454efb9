"""Tiny random-initialised models of every backbone (`hf_ltbm.backbones`), built in-process with no download.

They have the real architectures and the real audio front end (16 kHz, 128 mel bins, 30 s windows, 25 audio tokens
per second), so token counts, merging, compaction and generation behave exactly as with the released checkpoints; only
the widths are tiny and the weights random. **The text they generate is meaningless.** The CLI's offline demo runs
on them (`--model tiny-random-qwen2-audio`), and they are handy in tests and examples.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .config import MergeSetting

__all__ = [
    "TINY_MODELS",
    "build_tiny_model",
    "build_tiny_processor",
    "tiny_audio_config",
    "tiny_text_config",
    "tiny_tokenizer",
]

from .backbones import BACKBONES, Backbone

TINY_MODELS = tuple(backbone.tiny_name for backbone in BACKBONES.values())
"""Names the CLI and `build_tiny_model` accept in place of a checkpoint (`tiny-random-qwen2-audio`,
`tiny-random-audioflamingo3`)."""

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


def _backbone(name: str) -> Backbone:
    for backbone in BACKBONES.values():
        if backbone.tiny_name == name:
            return backbone
    raise ValueError(f"Unknown tiny model {name!r}; choose one of {list(TINY_MODELS)}.")


def build_tiny_processor(name: str = "tiny-random-qwen2-audio", audio_token_merge: MergeSetting = None) -> Any:
    """The merging processor of one of `TINY_MODELS` (Whisper features at 16 kHz, 128 mel bins, 30 s windows; an
    in-process word-level tokenizer with a chat template), without building the model."""
    return _backbone(name).tiny_processor(audio_token_merge)


def build_tiny_model(
    name: str = "tiny-random-qwen2-audio", audio_token_merge: MergeSetting = None, seed: int = 0
) -> tuple[torch.nn.Module, Any]:
    """Builds `(model, processor)` for one of `TINY_MODELS`, with random weights drawn from `seed`.

    The model is the merging `*ForConditionalGeneration` class in eval mode; the processor is the matching merging
    processor with the same `audio_token_merge` (both can be changed later, e.g. with `hf_ltbm.audio_token_merge`).
    The global torch RNG is left untouched.
    """
    backbone = _backbone(name)
    processor = build_tiny_processor(name, audio_token_merge)
    tokenizer = processor.tokenizer
    config = backbone.tiny_config(processor)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = backbone.generation_model(config, audio_token_merge=audio_token_merge)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval(), processor
