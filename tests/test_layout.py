"""The unit layout (`hf_ltbm.layout`): clip samples -> units -> encoder tokens per unit, in plain Python."""

import math

import pytest
import torch

from hf_ltbm.layout import UnitLayout, tokens_for_frames

RATE = 16000
WINDOW = 30 * RATE


def whisper_tokens(frames: int) -> int:
    """A Whisper-style encoder written out step by step: stride-2 convolution, then average pooling (kernel 2)."""
    after_conv = math.floor((frames + 2 * 1 - 3) / 2) + 1  # conv2: kernel 3, stride 2, padding 1
    return math.floor((after_conv - 2) / 2) + 1 if after_conv >= 2 else 0


def voxtral_tokens(frames: int) -> int:
    after_conv = math.floor((frames + 2 * 1 - 3) / 2) + 1
    return after_conv // 4  # four encoder frames concatenated per token


@pytest.mark.parametrize("frames", [0, 1, 2, 3, 4, 5, 6, 7, 8, 99, 100, 101, 2999, 3000])
def test_tokens_for_frames_is_the_encoders_arithmetic_on_ints_and_tensors(frames):
    assert tokens_for_frames(frames) == whisper_tokens(frames)
    assert tokens_for_frames(frames, frames_per_token=8) == voxtral_tokens(frames)
    as_tensor = tokens_for_frames(torch.tensor([frames, 3000]))
    assert as_tensor.tolist() == [whisper_tokens(frames), 750] and as_tensor.dtype == torch.long


def test_a_clip_of_one_unit_is_cut_at_the_window():
    layout = UnitLayout()  # Qwen2-Audio, Qwen2.5-Omni: one unit of at most 30 s
    assert layout.units(1) == layout.units(45 * RATE) == 1
    assert layout.unit_frames(10 * RATE) == [1000] and layout.unit_frames(45 * RATE) == [3000]
    assert layout.tokens(10 * RATE) == [250] and layout.tokens(45 * RATE) == [750]
    assert layout.unit_frames(161) == [2]  # a frame per started 10 ms hop
    assert layout.max_seconds == 30


def test_windows_up_to_a_limit_and_their_valid_frames():
    layout = UnitLayout(max_units=20)  # Audio Flamingo 3: 30 s windows, up to 600 s
    assert [layout.units(n) for n in (1, WINDOW, WINDOW + 1, 45 * RATE, 700 * RATE)] == [1, 1, 2, 2, 20]
    assert layout.unit_frames(45 * RATE) == [3000, 1500] and layout.tokens(45 * RATE) == [750, 375]
    assert layout.tokens(WINDOW + 320) == [750, 0]  # a last window of 320 samples or fewer has no token
    assert layout.tokens(WINDOW + 321) == [750, 1]
    assert layout.max_seconds == 600


def test_whole_chunks_of_any_count():
    layout = UnitLayout(max_units=None, whole_units=True, frames_per_token=8)  # Voxtral
    assert layout.units(1) == 1 and layout.units(61 * RATE) == 3
    assert layout.tokens(61 * RATE) == [375, 375, 375]
    assert layout.max_seconds == math.inf


def test_the_rate_and_window_come_from_the_layout():
    layout = UnitLayout(sampling_rate=8000, unit_seconds=2.0, max_units=3)
    assert layout.unit_samples == 16000 and layout.unit_frames(20000) == [200, 50] and layout.tokens(20000) == [50, 12]


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("sampling_rate", 16001, "a positive multiple of 100"),
        ("sampling_rate", 0, "a positive multiple of 100"),
        ("unit_seconds", 0.0, "a positive number of seconds"),
        ("max_units", -1, "a count >= 0 or None"),
        ("frames_per_token", 3, "an even count >= 2"),
    ],
)
def test_bad_layouts_are_refused_by_name(field, value, allowed):
    with pytest.raises(ValueError, match=rf"`{field}` must be {allowed}; got {value!r}"):
        UnitLayout(**{field: value})
