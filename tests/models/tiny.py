"""Tiny random-initialised configs of the real architectures (no downloads) and inputs for them."""

from __future__ import annotations

import torch
from transformers import AudioFlamingo3Config, MusicFlamingoConfig, Qwen2AudioConfig, VoxtralConfig

VOCAB = 160
AUDIO_TOKEN_ID = 151
PAD_TOKEN_ID = 0
MAX_SOURCE_POSITIONS = 100  # 200 mel frames = a 2 s window at 100 frames/s -> 50 audio tokens


def _text_config(**overrides):
    cfg = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=PAD_TOKEN_ID,
        eos_token_id=2,
        bos_token_id=1,
        tie_word_embeddings=False,
        model_type="qwen2",
    )
    cfg.update(overrides)
    return cfg


def _audio_config(mel_bins: int, model_type: str):
    return dict(
        model_type=model_type,
        num_mel_bins=mel_bins,
        d_model=24,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=48,
        max_source_positions=MAX_SOURCE_POSITIONS,
    )


def qwen2_audio_config(**kwargs) -> Qwen2AudioConfig:
    kwargs.setdefault("audio_token_id", AUDIO_TOKEN_ID)
    return Qwen2AudioConfig(
        audio_config=_audio_config(80, "qwen2_audio_encoder"), text_config=_text_config(), **kwargs
    )


def audioflamingo3_config(**kwargs) -> AudioFlamingo3Config:
    kwargs.setdefault("audio_token_id", AUDIO_TOKEN_ID)
    return AudioFlamingo3Config(
        audio_config=_audio_config(128, "audioflamingo3_encoder"), text_config=_text_config(), **kwargs
    )


def musicflamingo_config(**kwargs) -> MusicFlamingoConfig:
    kwargs = {"audio_token_id": AUDIO_TOKEN_ID, "audio_bos_token_id": 152, "audio_eos_token_id": 153, **kwargs}
    return MusicFlamingoConfig(
        audio_config=_audio_config(128, "audioflamingo3_encoder"), text_config=_text_config(), **kwargs
    )


def voxtral_config(**kwargs) -> VoxtralConfig:
    """Voxtral: its encoder (4 frames concatenated per token: 25 tokens per 2 s chunk) and a Llama text model."""
    return VoxtralConfig(
        audio_config=dict(
            hidden_size=16,
            intermediate_size=64,  # the projector reads 4 encoder frames per token: 4 x hidden_size
            num_hidden_layers=2,
            num_attention_heads=2,
            num_mel_bins=128,
            max_source_positions=MAX_SOURCE_POSITIONS,
        ),
        text_config=_text_config(model_type="llama", head_dim=8),
        **kwargs,
    )


def qwen2_5_omni_config(**kwargs):
    """Qwen2.5-Omni's thinker: its audio encoder (attention in 200-frame chunks), a one-block vision encoder and a
    language model with 3D rotary sections covering its head size (8)."""
    from transformers import Qwen2_5OmniThinkerConfig

    audio = dict(_audio_config(128, "qwen2_5_omni_audio_encoder"), n_window=100, output_dim=32)
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32)
    text = _text_config(
        model_type="qwen2_5_omni_text", rope_scaling={"rope_type": "default", "mrope_section": [2, 1, 1]}
    )
    tokens = dict(
        audio_token_index=AUDIO_TOKEN_ID,
        image_token_index=154,
        video_token_index=155,
        audio_start_token_id=152,
        audio_end_token_id=153,
    )
    config = Qwen2_5OmniThinkerConfig(
        audio_config=audio,
        vision_config=dict(vision, fullatt_block_indexes=[0]),
        text_config=text,
        **{**tokens, **kwargs},
    )
    config.vision_start_token_id = 156
    return config


def mel_frames() -> int:
    return MAX_SOURCE_POSITIONS * 2


def tokens_for_frames(frames: int) -> int:
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


def make_batch(
    mel_bins: int,
    unit_frames: list[list[int]],
    texts: list[tuple[list[int], list[int]]],
    counts,
    padding_side: str = "left",
    seed: int = 0,
):
    """Builds `input_ids`, `attention_mask`, features and masks for rows with audio units.

    `unit_frames[r]`: valid mel frames of each unit of row r; `texts[r]`: (prefix ids, suffix ids) around the row's
    audio; `counts(n) -> int`: placeholders emitted per unit given its unmerged token count.
    """
    g = torch.Generator().manual_seed(seed)
    rows, feats, masks = [], [], []
    for frames_list, (pre, post) in zip(unit_frames, texts):
        ids = list(pre)
        for frames in frames_list:
            ids += [AUDIO_TOKEN_ID] * counts(tokens_for_frames(frames))
            f = torch.zeros(mel_bins, mel_frames())
            f[:, :frames] = torch.randn(mel_bins, frames, generator=g)
            m = torch.zeros(mel_frames(), dtype=torch.long)
            m[:frames] = 1
            feats.append(f)
            masks.append(m)
        ids += list(post)
        rows.append(ids)
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), PAD_TOKEN_ID)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, ids in enumerate(rows):
        sl = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
        input_ids[r, sl] = torch.tensor(ids)
        attention_mask[r, sl] = 1
    return input_ids, attention_mask, torch.stack(feats), torch.stack(masks)


SPECIAL = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
WORDS = "what is in the audio ? describe sound caption a an of this clip please answer with one word yes no".split()


def tiny_tokenizer(audio_tokens: dict[str, int]):
    """A real (word-level) fast tokenizer built in-process, with the backbone's audio tokens at fixed ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = dict(SPECIAL)
    for word in WORDS:
        vocab[word] = len(vocab)
    extra = {"<|im_start|>": 154, "<|im_end|>": 155, **audio_tokens}
    vocab.update(extra)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        additional_special_tokens=list(extra),
    )


def qwen2_audio_processor(cls=None, **kwargs):
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    tokenizer = tiny_tokenizer({"<|AUDIO|>": AUDIO_TOKEN_ID, "<|audio_bos|>": 152, "<|audio_eos|>": 153})
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=MAX_SOURCE_POSITIONS // 50)
    return (cls or Qwen2AudioProcessor)(feature_extractor=fe, tokenizer=tokenizer, **kwargs)


def audioflamingo3_processor(cls=None, **kwargs):
    from transformers import AudioFlamingo3Processor, WhisperFeatureExtractor

    tokenizer = tiny_tokenizer({"<sound>": AUDIO_TOKEN_ID})
    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=MAX_SOURCE_POSITIONS // 50)
    kwargs.setdefault("max_audio_len", 3 * MAX_SOURCE_POSITIONS // 50)  # three 2 s windows
    return (cls or AudioFlamingo3Processor)(feature_extractor=fe, tokenizer=tokenizer, **kwargs)


def musicflamingo_processor(cls=None, **kwargs):
    from transformers import MusicFlamingoProcessor, WhisperFeatureExtractor

    tokenizer = tiny_tokenizer({"<sound>": AUDIO_TOKEN_ID, "<|sound_bos|>": 152, "<|sound_eos|>": 153})
    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=MAX_SOURCE_POSITIONS // 50)
    kwargs.setdefault("max_audio_len", 3 * MAX_SOURCE_POSITIONS // 50)  # three 2 s windows
    return (cls or MusicFlamingoProcessor)(feature_extractor=fe, tokenizer=tokenizer, **kwargs)


def tone(seconds: float, freq: float = 440.0, rate: int = 16000):
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
