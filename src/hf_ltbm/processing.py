"""What every merging processor shares: the merge setting (saved with the processor, restored by `AutoProcessor`), the
merged placeholder count, and refusing audio longer than the backbone takes whole; and what the processors of the
backbones that cut clips into 30 s windows share (`WindowedMergeProcessorMixin`).

Each backbone's processor (`hf_ltbm.backbones`) subclasses `MergeSettingProcessorMixin` and its upstream processor and
emits the merged number of audio placeholders, so the language model's input is short from the start:
`Qwen2AudioLTBMProcessor` emits `M = output_length(N)` `<|AUDIO|>` tokens per clip, `AudioFlamingo3LTBMProcessor`
`sum_w output_length(N_w)` `<sound>` tokens per clip (one merge per 30 s window). With no merge setting they behave
exactly like their upstream classes. Audio longer than the backbone accepts raises instead of being truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch

from .compat import processor_class_recorded_as
from .config import AudioTokenMergeConfig, MergeSetting

__all__ = ["MergeSettingProcessorMixin", "WindowedMergeProcessorMixin"]

_UNSET: Any = object()


class MergeSettingProcessorMixin:
    """Holds the merge setting of a processor as a plain dict (saved in `processor_config.json`).

    A saved folder names the upstream class as its `processor_class` (in `processor_config.json` and
    `tokenizer_config.json`), so plain transformers loads it as the upstream processor; with `hf_ltbm` imported,
    `AutoProcessor` sees the saved `audio_token_merge` and returns the merging processor with that setting.
    """

    audio_token_merge: Optional[dict[str, Any]]
    _upstream_class: type
    #: The family's declaration (`hf_ltbm.backbones.Backbone`), set when the family's classes are made.
    _backbone: Any

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

    def clip_placeholders(self, num_samples: int) -> int:
        """Placeholders emitted for a clip of `num_samples` samples: `merged_length(N_u)` summed over its units (the
        backbone's `unit_layout`)."""
        return sum(self.merged_length(n) for n in self._backbone.unit_layout(self).tokens(num_samples))

    def _duration_limit(self) -> tuple[str, str]:
        """`(what accepts at most the limit, advice)` for the too-long-audio error of this backbone."""
        raise NotImplementedError

    def check_audio_lengths(self, num_samples: Sequence[int], sampling_rate: int) -> None:
        """Raises a `ValueError` naming the first clip longer than the backbone takes whole (`max_audio_seconds`),
        its length and the limit: such audio is refused, never truncated. `num_samples[i]` is clip `i`'s length at
        `sampling_rate`. The pipeline calls this for every input before any batch runs."""
        limit = self._backbone.max_audio_seconds(self)
        for index, length in enumerate(num_samples):
            if length > limit * sampling_rate:
                what, advice = self._duration_limit()
                raise ValueError(
                    f"Audio {index} is {length / sampling_rate:.1f} s long, but {what} accepts at most {limit:g} s. "
                    f"{advice}"
                )


class WindowedMergeProcessorMixin(MergeSettingProcessorMixin):
    """What the processors of backbones that cut clips into 30 s windows share (Audio Flamingo 3, Music Flamingo):
    the too-long-audio message and the merged placeholder count of each clip (the sum over its windows). Features are
    always padded to whole windows (the encoder needs them; upstream crashes when `padding` reaches the feature
    extractor), and the placeholders go through the upstream `replace_audio_token` (with any markers around them)."""

    def _duration_limit(self) -> tuple[str, str]:
        layout, family = self._backbone.unit_layout(self), self._backbone.display_name
        if layout.max_units < 1:
            raise ValueError(
                f"max_audio_len={self.max_audio_len!r} keeps no {layout.unit_seconds:g} s window: {family} takes "
                "audio in whole windows, so `max_audio_len` must be at least one window long."
            )
        return (
            f"{family} (max_audio_len={self.max_audio_len}: {layout.max_units} whole {layout.unit_seconds:g} s "
            "windows)",
            "Cut it into shorter clips, or raise `max_audio_len` if the checkpoint supports longer audio.",
        )

    def _process_audio(self, audio, **kwargs):
        num_samples = [int(np.asarray(clip).shape[0]) for clip in audio]
        self.check_audio_lengths(num_samples, int(kwargs["sampling_rate"]))
        kwargs["padding"] = "max_length"
        audio_inputs, replacements = super()._process_audio(audio, **kwargs)
        if self.audio_token_merge is None:
            return audio_inputs, replacements
        counts = [self.clip_placeholders(n) for n in num_samples]
        audio_inputs["num_audio_tokens"] = torch.tensor(counts)
        return audio_inputs, [self.replace_audio_token(audio_inputs, audio_idx=i) for i in range(len(counts))]
