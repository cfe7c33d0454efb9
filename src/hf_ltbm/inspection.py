"""Which encoder frames each merged token of a clip stands for, under one or several merge settings.

`merge_maps(model, processor, audio, settings)` runs the audio encoder of a merging model once per setting and returns
a `MergeMap` per setting: the assignment of every encoder token (40 ms for the Whisper-style encoders, 80 ms for
Voxtral: the backbone's `mel_frames_per_token` mel frames) to its output token, per 30 s window, with the segments in
seconds and a summary (tokens before/after, mean and longest span).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .backbones import get_backbone
from .config import AudioTokenMergeConfig, MergeSetting
from .context import audio_token_merge
from .merging.diagnostics import group_spans

__all__ = ["MergeMap", "merge_maps"]


@dataclass
class MergeMap:
    """The merge of one clip under one setting.

    Args:
        setting (`AudioTokenMergeConfig`): the setting.
        assignments (`list[torch.LongTensor]`): per unit (30 s window), `[N_u]` output index of each encoder token
            (`-1`: dropped).
        seconds_per_token (`float`): duration of one encoder token (0.04 s for Qwen2-Audio and AF3, 0.08 s for
            Voxtral).
        unit_seconds (`float`): duration of one unit (30 s).
    """

    setting: AudioTokenMergeConfig
    assignments: list[torch.Tensor]
    seconds_per_token: float
    unit_seconds: float

    @property
    def tokens_before(self) -> int:
        """Audio tokens of the clip before the reduction (`N`)."""
        return sum(int(a.shape[0]) for a in self.assignments)

    @property
    def tokens_after(self) -> int:
        """Audio tokens the language model sees after the reduction (`M`)."""
        return sum(int(a.max()) + 1 if a.numel() else 0 for a in self.assignments)

    def segments(self) -> list[tuple[float, float, int]]:
        """`(start_s, end_s, token)` for every contiguous run of encoder tokens that one output token stands for;
        `token` numbers the output tokens of the whole clip in order."""
        out, offset = [], 0
        for unit, a in enumerate(self.assignments):
            pos = torch.arange(a.shape[0])
            kept = a >= 0
            # A run starts wherever the output index changes or the previous token was dropped.
            starts = kept & torch.cat([torch.tensor([True]), (a[1:] != a[:-1]) | ~kept[:-1]])
            ends = kept & torch.cat([(a[1:] != a[:-1]) | ~kept[1:], torch.tensor([True])])
            base = unit * self.unit_seconds
            for s, e in zip(pos[starts].tolist(), pos[ends].tolist()):
                out.append(
                    (base + s * self.seconds_per_token, base + (e + 1) * self.seconds_per_token, offset + int(a[s]))
                )
            offset += int(a.max()) + 1 if a.numel() else 0
        return out

    def summary(self) -> dict[str, Any]:
        """`tokens_before`, `tokens_after`, `mean_span_s` and `max_span_s` (first to last frame an output token
        covers, in seconds) and `non_contiguous` (fraction of output tokens whose frames are not one run)."""
        spans, sizes = [], []
        for a in self.assignments:
            m = int(a.max()) + 1
            first, last = group_spans(a, m)
            spans.append(last - first + 1)
            sizes.append(torch.bincount(a[a >= 0], minlength=m))
        span, size = torch.cat(spans).float(), torch.cat(sizes).float()
        return {
            "setting": str(self.setting),
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "mean_span_s": float(span.mean()) * self.seconds_per_token,
            "max_span_s": float(span.max()) * self.seconds_per_token,
            "non_contiguous": float((span > size).float().mean()),
        }


@torch.no_grad()
def merge_maps(model: Any, processor: Any, audio: np.ndarray, settings: Sequence[MergeSetting]) -> list[MergeMap]:
    """Merge maps of one clip (a waveform at the processor's rate) under each of `settings` (no text is generated).

    The model's own setting is restored afterwards.
    """
    extractor = processor.feature_extractor
    backbone = get_backbone(model.config.model_type)
    inputs = backbone.encode_audio(processor, audio)
    seconds_per_token = backbone.mel_frames_per_token * extractor.hop_length / extractor.sampling_rate
    maps = []
    for setting in settings:
        parsed = AudioTokenMergeConfig.from_value(setting)
        if parsed is None:
            raise ValueError("merge_maps needs merge settings; `None` (merging off) has no map.")
        with audio_token_merge(model, parsed):
            out = backbone.audio_features(model, inputs)
        result = out.merge_result
        counts = out.num_input_tokens.tolist()
        rows = iter(range(result.assignment.shape[0]))  # one row per unit with tokens
        assignments = [
            result.assignment[next(rows), :n].cpu() if n else result.assignment.new_zeros(0) for n in counts
        ]
        maps.append(MergeMap(parsed, assignments, seconds_per_token, float(extractor.chunk_length)))
    return maps
