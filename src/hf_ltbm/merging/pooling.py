"""Content-agnostic average pooling into `M` contiguous, near-equal segments."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TokenReducer, register_method

__all__ = ["AveragePooling", "segment_ids"]


def segment_ids(n: int, lengths: torch.Tensor, num_segments: torch.Tensor) -> torch.Tensor:
    """Index of the segment that holds each position when row `b` is cut into `num_segments[b]` contiguous parts.

    Segment `j` of a row of length `L` split into `S` parts spans `[floor(j * L / S), floor((j + 1) * L / S))`;
    position `i` therefore lies in segment `floor(((i + 1) * S - 1) / L)`. Exact integer arithmetic, batched.

    Args:
        n (`int`): padded sequence length.
        lengths (`torch.LongTensor` of shape `[B]`): valid length `L` per row (>= 1).
        num_segments (`torch.LongTensor` of shape `[B]`): `S` per row (>= 1).

    Returns:
        `torch.LongTensor` of shape `[B, n]`: segment index per position, `-1` on padding.
    """
    pos = torch.arange(n, device=lengths.device)[None]
    seg = torch.div((pos + 1) * num_segments[:, None] - 1, lengths[:, None], rounding_mode="floor")
    return torch.where(pos < lengths[:, None], seg, -1)


@register_method("pool")
@dataclass
class AveragePooling(TokenReducer):
    """Fixed pooling: `M` contiguous near-equal segments (boundaries `floor(j * N / M)`), each averaged.

    Content-agnostic (reads only the valid lengths): segment `j` of a row of `N` valid tokens covers input tokens
    `[floor(j * N / M), floor((j + 1) * N / M))`, so every output stands for `floor(N / M)` or `ceil(N / M)`
    tokens. Takes no options.
    """

    def assign(self, x, lengths, num_out, *, keys=None, scores=None, generator=None):
        return segment_ids(x.shape[1], lengths, num_out)
