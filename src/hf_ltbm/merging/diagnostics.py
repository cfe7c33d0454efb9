"""Diagnostics of a reduction: how faithfully output tokens stand for their inputs and how far merges reach in time."""

from __future__ import annotations

import torch

__all__ = ["group_spans", "merge_stats"]


def group_spans(assignment: torch.Tensor, num_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last input index covered by each output token of one row.

    Args:
        assignment (`torch.LongTensor` of shape `[N]`): output index per input token (`-1`: dropped or padding).
        num_out (`int`): number of output tokens `M`.

    Returns:
        `(first [M], last [M])` as int64 input indices.
    """
    kept = (assignment >= 0).nonzero().flatten()
    n = assignment.shape[0]
    first = torch.full((num_out,), n, dtype=torch.long).scatter_reduce(0, assignment[kept], kept, "amin")
    last = torch.full((num_out,), -1, dtype=torch.long).scatter_reduce(0, assignment[kept], kept, "amax")
    return first, last


def merge_stats(x: torch.Tensor, tokens: torch.Tensor, assignment: torch.Tensor) -> dict[str, float]:
    """Summary of how `tokens [M, D]` represent the input `x [N, D]` of one row, given `assignment [N]`.

    Returns a dict with:
        - `cosine`: mean cosine similarity between each input token and the output token that represents it; a
          pruned token is represented by the kept token nearest in time.
        - `mean_span`, `max_span`: extent, in input tokens, from the first to the last member of each output token.
        - `non_contiguous`: fraction of output tokens whose members do not form one contiguous run of inputs.
    """
    n, m = x.shape[0], tokens.shape[0]
    pos = torch.arange(n)
    kept = (assignment >= 0).nonzero().flatten()
    representative = assignment
    if len(kept) < n:  # pruning: every dropped token is represented by the kept token nearest in time
        right = torch.searchsorted(kept, pos).clamp(max=len(kept) - 1)
        left = (right - 1).clamp(min=0)
        nearest = torch.where((kept[left] - pos).abs() <= (kept[right] - pos).abs(), left, right)
        representative = assignment[kept[nearest]]
    cosine = torch.nn.functional.cosine_similarity(tokens[representative].float(), x.float(), dim=-1).mean()
    first, last = group_spans(assignment, m)
    span = (last - first + 1).float()
    sizes = torch.bincount(assignment[kept], minlength=m).float()
    return {
        "cosine": float(cosine),
        "mean_span": float(span.mean()),
        "max_span": float(span.max()),
        "non_contiguous": float((span > sizes).float().mean()),
    }
