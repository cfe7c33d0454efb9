"""What every merging processor shares: the merge setting (saved with the processor, restored by `AutoProcessor`), the
merged placeholder count, and refusing audio longer than the backbone takes whole.

Each backbone's processor (`hf_ltbm.backbones`) subclasses `MergeSettingProcessorMixin` and its upstream processor and
emits the merged number of audio placeholders, so the language model's input is short from the start:
`Qwen2AudioLTBMProcessor` emits `M = output_length(N)` `<|AUDIO|>` tokens per clip, `AudioFlamingo3LTBMProcessor`
`sum_w output_length(N_w)` `<sound>` tokens per clip (one merge per 30 s window). With no merge setting they behave
exactly like their upstream classes. Audio longer than the backbone accepts raises instead of being truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

from .compat import processor_class_recorded_as
from .config import AudioTokenMergeConfig, MergeSetting

__all__ = [
    "MergeSettingProcessorMixin",
    "max_audio_seconds",
    "tokens_per_unit",
    "units_per_clip",
]

_UNSET: Any = object()


def tokens_per_unit(frames: torch.Tensor) -> list[int]:
    """Audio-encoder tokens for `frames` valid mel frames (Whisper-style: conv stride 2, then average pooling by 2)."""
    return (((frames.long() - 1) // 2 + 1 - 2) // 2 + 1).tolist()


def _backbone(processor: Any):
    from .backbones import backbone_for

    backbone = backbone_for(processor)
    if backbone is None:
        raise ValueError(f"{type(processor).__name__} is not the processor of a backbone hf-ltbm supports.")
    return backbone


def units_per_clip(processor: Any, num_samples: list[int]) -> list[int]:
    """How many audio-encoder units (rows of `input_features`) each clip of `num_samples[i]` samples becomes with
    `processor` (stock or merging): one per clip for Qwen2-Audio, one per started 30 s window for Audio Flamingo 3
    (see each backbone's `units_per_clip`)."""
    return _backbone(processor).units_per_clip(processor, num_samples)


def max_audio_seconds(processor: Any) -> float:
    """The longest clip `processor`'s backbone takes whole: one 30 s window for Qwen2-Audio; for Audio Flamingo 3 the
    whole windows that fit in `max_audio_len` (600 s by default)."""
    return _backbone(processor).max_audio_seconds(processor)


class MergeSettingProcessorMixin:
    """Holds the merge setting of a processor as a plain dict (saved in `processor_config.json`).

    A saved folder names the upstream class as its `processor_class` (in `processor_config.json` and
    `tokenizer_config.json`), so plain transformers loads it as the upstream processor; with `hf_ltbm` imported,
    `AutoProcessor` sees the saved `audio_token_merge` and returns the merging processor with that setting.
    """

    audio_token_merge: Optional[dict[str, Any]]
    _upstream_class: type

    @classmethod
    def from_pretrained(cls, *args: Any, audio_token_merge: MergeSetting = _UNSET, **kwargs: Any) -> Any:
        """`ProcessorMixin.from_pretrained`; `audio_token_merge` (validated first) replaces the saved setting. It is
        not handed on: transformers passes unknown keywords down to the tokenizer's config, whose log line then fails
        to serialise a config object."""
        if audio_token_merge is not _UNSET:
            AudioTokenMergeConfig.from_value(audio_token_merge)  # a bad setting fails before anything loads
        processor = super().from_pretrained(*args, **kwargs)
        if audio_token_merge is not _UNSET:
            processor._init_setting(audio_token_merge)
        return processor

    def to_dict(self) -> dict[str, Any]:
        """The upstream serialisation, with the upstream class as `processor_class` and the merge setting."""
        output = super().to_dict()
        output["processor_class"] = self._upstream_class.__name__
        return output

    def save_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        """`ProcessorMixin.save_pretrained`, recording the upstream class name for the tokenizer too."""
        with processor_class_recorded_as(self, self._upstream_class.__name__):
            return super().save_pretrained(*args, **kwargs)

    def _init_setting(self, audio_token_merge: MergeSetting) -> None:
        parsed = AudioTokenMergeConfig.from_value(audio_token_merge)
        self.audio_token_merge = None if parsed is None else parsed.to_dict()

    @property
    def merge_config(self) -> Optional[AudioTokenMergeConfig]:
        """The merge setting as an `AudioTokenMergeConfig` (`None`: placeholders are not reduced)."""
        return None if self.audio_token_merge is None else AudioTokenMergeConfig.from_dict(self.audio_token_merge)

    def set_audio_token_merge(self, value: MergeSetting) -> None:
        """Changes the merge setting (`None`: placeholders are not reduced); validated before it is stored."""
        self._init_setting(value)

    def merged_length(self, n: int) -> int:
        """Placeholders emitted for an audio unit of `n` encoder tokens."""
        setting = self.merge_config
        return n if setting is None else setting.output_length(n)

    def _duration_limit(self) -> tuple[str, str]:
        """`(what accepts at most the limit, advice)` for the too-long-audio error of this backbone."""
        raise NotImplementedError

    def check_audio_lengths(self, num_samples: Sequence[int], sampling_rate: int) -> None:
        """Raises a `ValueError` naming the first clip longer than the backbone takes whole (`max_audio_seconds`),
        its length and the limit: such audio is refused, never truncated. `num_samples[i]` is clip `i`'s length at
        `sampling_rate`. The pipeline calls this for every input before any batch runs."""
        limit = max_audio_seconds(self)
        for index, length in enumerate(num_samples):
            if length > limit * sampling_rate:
                what, advice = self._duration_limit()
                raise ValueError(
                    f"Audio {index} is {length / sampling_rate:.1f} s long, but {what} accepts at most {limit:g} s. "
                    f"{advice}"
                )


def __getattr__(name: str) -> Any:
    # The backbones' processors live in `hf_ltbm.backbones` (which imports this module): re-exported lazily.
    if name in ("Qwen2AudioLTBMProcessor", "AudioFlamingo3LTBMProcessor"):
        from . import backbones

        return getattr(backbones, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
