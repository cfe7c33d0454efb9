"""Processors that emit the merged number of audio placeholders, so the language model's input is short from the start.

`Qwen2AudioLTBMProcessor` emits `M = output_length(N)` `<|AUDIO|>` tokens per clip; `AudioFlamingo3LTBMProcessor` emits
`sum_w output_length(N_w)` `<sound>` tokens per clip (one merge per 30 s window). With no merge setting both behave
exactly like their upstream classes. Audio longer than the backbone accepts raises instead of being truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
from transformers import AudioFlamingo3Processor, Qwen2AudioProcessor

from .compat import processor_class_recorded_as
from .config import AudioTokenMergeConfig, MergeSetting

__all__ = ["AudioFlamingo3LTBMProcessor", "Qwen2AudioLTBMProcessor", "max_audio_seconds", "units_per_clip"]

_UNSET: Any = object()


def _tokens_per_unit(frames: torch.Tensor) -> list[int]:
    """Audio-encoder tokens for `frames` valid mel frames (conv stride 2, then average pooling by 2)."""
    return (((frames.long() - 1) // 2 + 1 - 2) // 2 + 1).tolist()


def _af3_windows(processor: Any) -> tuple[int, int]:
    """`(samples per window, windows kept per clip)` of an Audio Flamingo 3 processor: upstream cuts clips into
    `chunk_length` (30 s) windows and keeps the first `floor(max_audio_len / chunk_length)` of them, so a
    `max_audio_len` that is not a multiple of 30 s keeps less than `max_audio_len` seconds."""
    extractor = processor.feature_extractor
    return int(extractor.sampling_rate * extractor.chunk_length), int(
        processor.max_audio_len // extractor.chunk_length
    )


def units_per_clip(processor: Any, num_samples: list[int]) -> list[int]:
    """How many audio-encoder units (rows of `input_features`) each clip of `num_samples[i]` samples becomes: one per
    clip for Qwen2-Audio; for Audio Flamingo 3 one per started 30 s window, at most the windows upstream keeps (stock
    or merging processors)."""
    if isinstance(processor, AudioFlamingo3Processor):
        window, kept = _af3_windows(processor)
        return [min(kept, max(1, -(-int(n) // window))) for n in num_samples]
    return [1 for _ in num_samples]


def max_audio_seconds(processor: Any) -> float:
    """The longest clip the backbone takes whole: one 30 s window for Qwen2-Audio; for Audio Flamingo 3 the whole
    windows that fit in `max_audio_len` (600 s by default)."""
    if isinstance(processor, AudioFlamingo3Processor):
        window, kept = _af3_windows(processor)
        return kept * window / processor.feature_extractor.sampling_rate
    extractor = processor.feature_extractor
    return extractor.n_samples / extractor.sampling_rate


class _MergeSettingProcessorMixin:
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


class Qwen2AudioLTBMProcessor(_MergeSettingProcessorMixin, Qwen2AudioProcessor):
    """`Qwen2AudioProcessor` that emits `output_length(N, ...)` `<|AUDIO|>` placeholders per clip.

    `N` is the clip's encoder token count (25 per second, at most 750 for the 30 s the encoder takes); a clip longer
    than 30 s raises a `ValueError` instead of being truncated. `input_features [num_clips, num_mel_bins, 3000]` and
    `feature_attention_mask [num_clips, 3000]` are the upstream ones; with a merge setting only `input_ids` /
    `attention_mask` are shorter.

    Args:
        feature_extractor, tokenizer, chat_template, audio_token, audio_bos_token, audio_eos_token:
            as for `Qwen2AudioProcessor`.
        audio_token_merge (`str`, `dict` or `AudioTokenMergeConfig`, *optional*): the model's merge setting.
    """

    _upstream_class = Qwen2AudioProcessor

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        chat_template=None,
        audio_token="<|AUDIO|>",
        audio_bos_token="<|audio_bos|>",
        audio_eos_token="<|audio_eos|>",
        audio_token_merge: MergeSetting = None,
    ):
        self._init_setting(audio_token_merge)
        super().__init__(
            feature_extractor,
            tokenizer,
            chat_template=chat_template,
            audio_token=audio_token,
            audio_bos_token=audio_bos_token,
            audio_eos_token=audio_eos_token,
        )

    def _process_audio(self, audio, **kwargs):
        audio = self.feature_extractor.fetch_audio(audio)
        clips = audio if isinstance(audio, (list, tuple)) else [audio]
        self.check_audio_lengths([np.asarray(clip).shape[-1] for clip in clips], self.feature_extractor.sampling_rate)
        return super()._process_audio(audio, **kwargs)

    def _duration_limit(self) -> tuple[str, str]:
        return "Qwen2-Audio", "Cut it into clips of at most that length, each with its own audio placeholder."

    def replace_audio_token(self, audio_inputs: dict, audio_idx: int, **kwargs) -> str:
        """The placeholder run for clip `audio_idx`: `merged_length(N)` audio tokens, where `N` is its entry of
        `audio_inputs["num_audio_tokens"]` (`[num_clips]`, the unmerged counts)."""
        n = audio_inputs["num_audio_tokens"][audio_idx]
        return self.audio_token * self.merged_length(int(n))


class AudioFlamingo3LTBMProcessor(_MergeSettingProcessorMixin, AudioFlamingo3Processor):
    """`AudioFlamingo3Processor` that emits `sum_w output_length(N_w, ...)` `<sound>` placeholders per clip.

    Each clip is cut into 30 s windows `w` of `N_w` encoder tokens (750 for a full window), one row of
    `input_features [num_windows, num_mel_bins, 3000]` / `input_features_mask [num_windows, 3000]` each (the windows
    of all clips, in order); with a merge setting only `input_ids` / `attention_mask` are shorter than upstream's.
    Audio features are always padded to whole 30 s windows (the encoder needs them; upstream crashes when `padding`
    reaches the feature extractor), and audio longer than `max_audio_len` raises instead of being truncated.

    Args:
        feature_extractor, tokenizer, chat_template, audio_token, default_transcription_prompt, max_audio_len:
            as for `AudioFlamingo3Processor`.
        audio_token_merge (`str`, `dict` or `AudioTokenMergeConfig`, *optional*): the model's merge setting.
    """

    _upstream_class = AudioFlamingo3Processor

    def _duration_limit(self) -> tuple[str, str]:
        window, kept = _af3_windows(self)
        seconds = window / self.feature_extractor.sampling_rate
        if kept < 1:
            raise ValueError(
                f"max_audio_len={self.max_audio_len!r} keeps no {seconds:g} s window: Audio Flamingo 3 takes "
                "audio in whole windows, so `max_audio_len` must be at least one window long."
            )
        return (
            f"Audio Flamingo 3 (max_audio_len={self.max_audio_len}: {kept} whole {seconds:g} s windows)",
            "Cut it into shorter clips, or raise `max_audio_len` if the checkpoint supports longer audio.",
        )

    def __init__(
        self,
        feature_extractor,
        tokenizer,
        chat_template=None,
        audio_token="<sound>",
        default_transcription_prompt="Transcribe the input speech.",
        max_audio_len=600,
        audio_token_merge: MergeSetting = None,
    ):
        self._init_setting(audio_token_merge)
        super().__init__(
            feature_extractor,
            tokenizer,
            chat_template=chat_template,
            audio_token=audio_token,
            default_transcription_prompt=default_transcription_prompt,
            max_audio_len=max_audio_len,
        )

    def _process_audio(self, audio, **kwargs):
        self.check_audio_lengths([int(np.asarray(clip).shape[0]) for clip in audio], int(kwargs["sampling_rate"]))
        kwargs["padding"] = "max_length"
        audio_inputs, replacements = super()._process_audio(audio, **kwargs)
        if self.audio_token_merge is None:
            return audio_inputs, replacements
        windows = units_per_clip(self, [int(np.asarray(clip).shape[0]) for clip in audio])
        per_window = [self.merged_length(n) for n in _tokens_per_unit(audio_inputs["input_features_mask"].sum(-1))]
        starts = np.cumsum([0] + windows)
        counts = [sum(per_window[starts[i] : starts[i + 1]]) for i in range(len(windows))]
        audio_inputs["num_audio_tokens"] = torch.tensor(counts)
        return audio_inputs, [self.audio_token * c for c in counts]
