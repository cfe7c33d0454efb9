"""Score-based pruning: keep the `M` highest-scoring tokens (optionally per temporal segment), in original order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .base import TokenReducer, _check_int, register_method
from .pooling import segment_ids

__all__ = ["AttentionPruning", "NormPruning", "RandomPruning", "SegmentTopKPruning", "select_top"]

_SCORE_SOURCES = ("attention", "norm")


def select_top(
    scores: torch.Tensor, lengths: torch.Tensor, num_out: torch.Tensor, num_segments: Optional[int] = None
) -> torch.Tensor:
    """Keeps the `M` highest-scoring valid tokens of each row, in their original order.

    With `num_segments = S`, row `b` is cut into `S` contiguous segments (boundaries `c_j = floor(j * L / S)`) and
    segment `j` keeps its `floor(M * c_(j+1) / L) - floor(M * c_j / L)` best tokens: quotas that sum to exactly `M`
    and never exceed a segment's length (segments are never starved, whatever `S`). Ties go to the earlier token.

    Args:
        scores (`torch.Tensor` of shape `[B, N]`): importance per token (higher is kept first).
        lengths (`torch.LongTensor` of shape `[B]`): valid tokens per row.
        num_out (`torch.LongTensor` of shape `[B]`): tokens to keep per row (`M`).
        num_segments (`int`, *optional*): `S`; `None` keeps the global top `M`.

    Returns:
        `torch.LongTensor` of shape `[B, N]`: output slot of each kept token, `-1` for dropped tokens and padding.
    """
    batch, n = scores.shape
    segments = torch.full_like(lengths, 1 if num_segments is None else num_segments)
    seg = segment_ids(n, lengths, segments)
    seg_key = seg.masked_fill(seg < 0, int(segments.max()))  # padding sorts last
    # Sort by score (descending, stable: earlier first on ties), then stably by segment: each segment's tokens end up
    # contiguous and best-first, starting at position `c_j` since segments are contiguous runs of positions.
    by_score = scores.float().masked_fill(seg < 0, float("-inf")).argsort(dim=1, descending=True, stable=True)
    order = by_score.gather(1, seg_key.gather(1, by_score).argsort(dim=1, stable=True))
    sorted_pos = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=scores.device).expand_as(order))
    j = torch.arange(int(segments.max()) + 1, device=scores.device)[None]
    bounds = torch.div(j * lengths[:, None], segments[:, None], rounding_mode="floor").clamp(max=lengths[:, None])
    quota_edges = torch.div(num_out[:, None] * bounds, lengths[:, None], rounding_mode="floor")
    safe = seg.clamp(min=0)
    rank = sorted_pos - bounds.gather(1, safe)
    keep = (seg >= 0) & (rank < (quota_edges[:, 1:] - quota_edges[:, :-1]).gather(1, safe))
    return torch.where(keep, keep.cumsum(1) - 1, -1)


@register_method("prune_norm")
@dataclass
class NormPruning(TokenReducer):
    """Keeps the `M` tokens with the largest L2 norm, in temporal order.

    The score of token `i` is `||x[b, i]||_2` over the feature dimension of `x [B, N, D]` (float32), i.e. of the
    tokens being reduced: the encoder output in encoder space, the projected tokens in projector space. Ties keep the
    earlier token. Takes no options.
    """

    averages = False

    def assign(self, x, lengths, num_out, *, keys=None, scores=None, generator=None):
        return select_top(x.detach().float().norm(dim=-1), lengths, num_out)


@register_method("prune_attention")
@dataclass
class AttentionPruning(TokenReducer):
    """Keeps the `M` tokens with the largest `scores [B, N]`, in temporal order (ties keep the earlier token).

    The model classes pass the attention each token receives in the last encoder layer (mean over heads and valid
    queries, pooled from frames to tokens like the encoder's output); any per-token importance works. Takes no
    options; `scores` is required.
    """

    averages = False
    requires_scores = True

    def assign(self, x, lengths, num_out, *, keys=None, scores=None, generator=None):
        return select_top(scores, lengths, num_out)


@register_method("segment_topk")
@dataclass
class SegmentTopKPruning(TokenReducer):
    """Segmentwise top-K (Gibier et al., 2025): `num_segments` contiguous segments, each keeps its best tokens.

    Args:
        num_segments (`int`, defaults to 10): number of segments `S` (>= 1); a segment keeps about `M / S` tokens
            (exact quotas in :func:`select_top`). The default cuts a 30 s clip into 3 s segments.
        score (`str`, defaults to `"attention"`): `"attention"` ranks by the `scores` passed in (as the original
            method does, with last-layer encoder attention), `"norm"` by feature L2 norm.
    """

    num_segments: int = 10
    score: str = "attention"
    averages = False

    def __post_init__(self) -> None:
        _check_int("num_segments", self.num_segments, 1)
        if self.score not in _SCORE_SOURCES:
            raise ValueError(f"`score` must be one of {_SCORE_SOURCES}, got {self.score!r}.")

    @property
    def requires_scores(self) -> bool:  # type: ignore[override]
        """Whether `scores [B, N]` must be passed: only with `score="attention"`."""
        return self.score == "attention"

    def assign(self, x, lengths, num_out, *, keys=None, scores=None, generator=None):
        if self.score == "norm":
            scores = x.detach().float().norm(dim=-1)
        return select_top(scores, lengths, num_out, self.num_segments)


@register_method("random")
@dataclass
class RandomPruning(TokenReducer):
    """Keeps `M` tokens drawn uniformly at random, in temporal order.

    Draws `torch.rand` scores `[B, N]` from `generator` (on the generator's device; PyTorch's global generator when
    none is given) and keeps the top `M` of each row: a uniformly random subset. Seed it for reproducible runs
    (`AudioTokenMergeConfig(seed=...)` builds a fresh seeded generator for every merge). The draws depend on the
    padded batch shape, so a row can be reduced differently alone and in a batch. Takes no options.
    """

    averages = False
    uses_generator = True

    def assign(self, x, lengths, num_out, *, keys=None, scores=None, generator=None):
        device = generator.device if generator is not None else x.device
        draws = torch.rand(x.shape[:2], generator=generator, device=device).to(x.device)
        return select_top(draws, lengths, num_out)
