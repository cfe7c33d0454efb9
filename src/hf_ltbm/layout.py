"""A backbone's unit layout: how a clip's samples become units (the rows the audio encoder runs on) and how many
encoder tokens each unit has.

Plain Python, no torch and no transformers: a family declares its layout once (`Backbone.unit_layout`), and the
transformers processors, the models and the vLLM processors all count with it. A merge setting then turns each unit's
`N_u` tokens into `output_length(N_u)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, TypeVar

__all__ = ["UnitLayout", "tokens_for_frames"]

#: Mel frames per second (a 10 ms hop) of every supported audio front end.
MEL_FRAMES_PER_SECOND = 100

Frames = TypeVar("Frames")


def tokens_for_frames(mel_frames: Frames, frames_per_token: int = 4) -> Frames:
    """Encoder tokens of a unit with `mel_frames` valid mel frames, elementwise on an `int` or an integer tensor.

    Every supported encoder starts with a stride-2 convolution (`(f - 1) // 2 + 1` frames), then makes one token of
    each `frames_per_token // 2` of those: Whisper-style encoders pool pairs (`frames_per_token=4`, 25 tokens per
    second, 750 per 30 s), Voxtral concatenates four (`frames_per_token=8`, 375 per 30 s).
    """
    return ((mel_frames - 1) // 2 + 1) // (frames_per_token // 2)


@dataclass(frozen=True)
class UnitLayout:
    """How a clip of `num_samples` samples becomes units and encoder tokens.

    Args:
        sampling_rate (`int`): samples per second of the audio the processor takes (16000).
        unit_seconds (`float`): seconds of audio per unit (30.0: Whisper's window).
        max_units (`int`, *optional*): the units a clip keeps at most, its first ones (`1`: a clip is one unit, longer
            audio is cut off or refused; `None`: as many as it needs).
        whole_units (`bool`): whether every unit is encoded whole, padding included (Voxtral: mistral-common pads a
            clip to whole chunks and there is no feature mask), rather than only its valid mel frames.
        frames_per_token (`int`): mel frames (10 ms each) per encoder token (`tokens_for_frames`).
    """

    sampling_rate: int = 16000
    unit_seconds: float = 30.0
    max_units: Optional[int] = 1
    whole_units: bool = False
    frames_per_token: int = 4

    def __post_init__(self) -> None:
        checks = {
            "sampling_rate": self.sampling_rate > 0 and self.sampling_rate % MEL_FRAMES_PER_SECOND == 0,
            "unit_seconds": self.unit_seconds > 0,
            "max_units": self.max_units is None or self.max_units >= 0,
            "frames_per_token": self.frames_per_token >= 2 and self.frames_per_token % 2 == 0,
        }
        allowed = {
            "sampling_rate": f"a positive multiple of {MEL_FRAMES_PER_SECOND}",
            "unit_seconds": "a positive number of seconds",
            "max_units": "a count >= 0 or None",
            "frames_per_token": "an even count >= 2",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"UnitLayout: `{name}` must be {allowed[name]}; got {getattr(self, name)!r}.")

    @property
    def unit_samples(self) -> int:
        """Samples per unit (480000 for 30 s at 16 kHz)."""
        return round(self.unit_seconds * self.sampling_rate)

    @property
    def max_seconds(self) -> float:
        """The longest clip kept whole (`inf` without `max_units`)."""
        return math.inf if self.max_units is None else self.max_units * self.unit_samples / self.sampling_rate

    def units(self, num_samples: int) -> int:
        """The units of a clip: one per started unit (at least one), at most `max_units`."""
        started = max(1, -(-int(num_samples) // self.unit_samples))
        return started if self.max_units is None else min(started, self.max_units)

    def unit_frames(self, num_samples: int) -> list[int]:
        """The valid mel frames of each unit of a clip (a 10 ms frame per started hop, as the feature mask counts)."""
        unit, hop = self.unit_samples, self.sampling_rate // MEL_FRAMES_PER_SECOND
        samples = (
            unit if self.whole_units else min(unit, max(0, int(num_samples) - i * unit))
            for i in range(self.units(num_samples))
        )
        return [-(-count // hop) for count in samples]

    def tokens(self, num_samples: int) -> list[int]:
        """The encoder tokens `N_u` of each unit of a clip of `num_samples` samples."""
        return [tokens_for_frames(frames, self.frames_per_token) for frames in self.unit_frames(num_samples)]
