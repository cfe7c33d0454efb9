"""The tests' tiny models: `hf_ltbm.tiny`'s builders with 2 s windows and narrow widths (`SPECS`), and inputs for them.

Nothing here makes a config, tokenizer or processor of its own: constants are read from what `hf_ltbm.tiny` builds.
"""

from __future__ import annotations

import dataclasses

import torch

from hf_ltbm.backbones import get_backbone
from hf_ltbm.tiny import TinySpec, build_tiny_config, build_tiny_processor

#: 2 s windows (200 mel frames, 100 encoder positions, 50 audio tokens) and narrow widths: fast model tests.
SPEC = TinySpec(
    window_seconds=2,
    hidden_size=32,
    num_attention_heads=4,  # head size 8
    num_key_value_heads=2,
    max_position_embeddings=512,  # transformers' common rotary-scaling tests are tuned to short position ranges
    audio_hidden_size=24,
    audio_attention_heads=4,
)
#: Family (`config.model_type`) -> its sizes: Qwen2-Audio with 80 mel bins (not the default 128), Voxtral with a
#: narrower audio encoder, GLM-ASR with a wider one (its encoder rotates half of each head).
SPECS = {
    "qwen2_audio": dataclasses.replace(SPEC, mel_bins=80),
    "audioflamingo3": SPEC,
    "musicflamingo": SPEC,
    "qwen2_5_omni_thinker": SPEC,
    "voxtral": dataclasses.replace(SPEC, audio_hidden_size=16, audio_attention_heads=2),
    "glmasr": dataclasses.replace(SPEC, audio_hidden_size=32),  # head size 8: a rotary half of 4
}
#: Audio Flamingo 3's, Music Flamingo's and GLM-ASR's processors take three 2 s windows per clip (`max_audio_len`,
#: seconds).
MAX_WINDOWS = 3
#: The families of the shared model tests (`tests/models/conftest.py`), whose prompts the tests write with ids.
PROMPT_FAMILIES = ("qwen2_audio", "audioflamingo3", "musicflamingo", "qwen2_5_omni_thinker", "glmasr")


def tiny_name(family: str) -> str:
    """The `hf_ltbm.tiny` name of a family (`"qwen2_audio"` -> `"tiny-random-qwen2-audio"`)."""
    return get_backbone(family).tiny_name


def config(family: str, **kwargs):
    """The upstream config of `family`'s tiny model with the tests' sizes; `kwargs` override its arguments."""
    return build_tiny_config(tiny_name(family), spec=SPECS[family], **kwargs)


def processor(family: str, merging: bool = False, **kwargs):
    """`family`'s tiny processor with the tests' sizes: the upstream class, or with `merging` the merging one (whose
    `audio_token_merge` is in `kwargs`). The windowed families take `MAX_WINDOWS` windows unless `max_audio_len` is
    given."""
    if family in ("audioflamingo3", "musicflamingo", "glmasr"):
        kwargs.setdefault("max_audio_len", MAX_WINDOWS * SPEC.window_seconds)
    return build_tiny_processor(tiny_name(family), spec=SPECS[family], upstream=not merging, **kwargs)


def audio_token_id(family: str) -> int:
    """The id of `family`'s audio placeholder in its tiny tokenizer."""
    tokenizer = processor(family, merging=True).tokenizer
    return tokenizer.convert_tokens_to_ids(get_backbone(family).tiny_audio_tokens[0])


#: The audio placeholder's id and the padding id in the tiny tokenizers of `PROMPT_FAMILIES` (the placeholder is the
#: first token after the fixed specials, so they agree).
_IDS = {
    family: (audio_token_id(family), processor(family, merging=True).tokenizer.pad_token_id)
    for family in PROMPT_FAMILIES
}
assert len(set(_IDS.values())) == 1, _IDS
AUDIO_TOKEN_ID, PAD_TOKEN_ID = _IDS["qwen2_audio"]
#: Encoder positions per 2 s window (`max_source_positions`), and mel frames per window.
MAX_SOURCE_POSITIONS = SPEC.max_source_positions
MEL_FRAMES = SPEC.mel_frames


def mel_frames() -> int:
    return MEL_FRAMES


#: Model types whose audio token is 8 mel frames (4 encoder frames concatenated: 12.5 tokens per second, 80 ms each);
#: every other family's is 4 (25 per second, 40 ms). The tests' one statement of it.
EIGHT_FRAMES_PER_TOKEN = frozenset({"voxtral", "glmasr"})


def frames_per_token(model_type: str) -> int:
    """Mel frames per audio token of a family (`EIGHT_FRAMES_PER_TOKEN`)."""
    return 8 if model_type in EIGHT_FRAMES_PER_TOKEN else 4


def tokens_for_frames(frames: int, frames_per_token: int = 4) -> int:
    """Audio tokens of a unit of `frames` valid mel frames, as upstream writes it: the stride-2 convolution, then
    average pooling by 2 (`frames_per_token=4`) or GLM-ASR's groups of 4 frames (`frames_per_token=8`)."""
    group = frames_per_token // 2
    return ((frames - 1) // 2 + 1 - group) // group + 1


def make_batch(
    mel_bins: int,
    unit_frames: list[list[int]],
    texts: list[tuple[list[int], list[int]]],
    counts,
    padding_side: str = "left",
    seed: int = 0,
    audio_token_id: int = AUDIO_TOKEN_ID,
    pad_token_id: int = PAD_TOKEN_ID,
    frames_per_token: int = 4,
):
    """Builds `input_ids`, `attention_mask`, features and masks for rows with audio units.

    `unit_frames[r]`: valid mel frames of each unit of row r; `texts[r]`: (prefix ids, suffix ids) around the row's
    audio; `counts(n) -> int`: placeholders emitted per unit given its unmerged token count (`tokens_for_frames` of
    `frames_per_token`).
    """
    g = torch.Generator().manual_seed(seed)
    rows, feats, masks = [], [], []
    for frames_list, (pre, post) in zip(unit_frames, texts):
        ids = list(pre)
        for frames in frames_list:
            ids += [audio_token_id] * counts(tokens_for_frames(frames, frames_per_token))
            f = torch.zeros(mel_bins, mel_frames())
            f[:, :frames] = torch.randn(mel_bins, frames, generator=g)
            m = torch.zeros(mel_frames(), dtype=torch.long)
            m[:frames] = 1
            feats.append(f)
            masks.append(m)
        ids += list(post)
        rows.append(ids)
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_token_id)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, ids in enumerate(rows):
        sl = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
        input_ids[r, sl] = torch.tensor(ids)
        attention_mask[r, sl] = 1
    return input_ids, attention_mask, torch.stack(feats), torch.stack(masks)


def tone(seconds: float, freq: float = 440.0, rate: int = 16000):
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
