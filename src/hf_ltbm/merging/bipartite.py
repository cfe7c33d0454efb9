"""Local Temporal Bipartite Merging (LTBM) and its Global Merge control.

Both run the same rounds of ToMe-style bipartite soft matching until each row holds its target count `M`:

1. split the current sequence into A (even slots) and B (odd slots);
2. score every A token against the B tokens within `window` slots of the *current* sequence by the cosine
   similarity of their merge keys (Global Merge: every B token);
3. merge the `r = min(n - M, n // 2)` best-scoring A tokens into their best partners (ties: earlier A first);
4. survivors keep their order, a merged group sits at its B slot.

Only the candidate set differs between the two methods: `GlobalMerge` is `LTBM` with an infinite window, and
`LTBM` with a window that covers the whole sequence runs the very same code path (bitwise equal results).

Merge keys are carried through the rounds as *sums* over each group. Cosine similarity is scale invariant, so
the sum scores exactly like the size-weighted mean, and no sizes are needed until the final average (done once,
from the original tokens, by :func:`~hf_ltbm.merging.base.pool_by_assignment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .base import TokenReducer, _check_int, register_method
from .registry import DEFAULT_WINDOW

__all__ = ["DEFAULT_WINDOW", "GlobalMerge", "LocalTemporalBipartiteMerge", "bipartite_assign"]

# The dense (global) similarity is computed in blocks of A rows so that at most this many scores are alive at
# once: Global Merge then needs O(N) memory too, only its time stays O(N^2).
_DENSE_BLOCK_ELEMENTS = 1 << 24
_EPS = 1e-12


def _cosine_dense(
    a: torch.Tensor, b: torch.Tensor, norm_a: torch.Tensor, norm_b: torch.Tensor, num_valid_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best B partner of every A token among all valid B tokens.

    `a [B, nA, Dk]`, `b [B, nB, Dk]` with norms `norm_a [B, nA]`, `norm_b [B, nB]`; `num_valid_b [B]`.
    Returns `(score [B, nA], partner [B, nA])`, ties to the earliest B. Computed in blocks of A rows, so memory
    stays O(N) while time is O(N^2 * Dk).
    """
    invalid = (torch.arange(b.shape[1], device=a.device)[None] >= num_valid_b[:, None])[:, None, :]
    block = max(1, _DENSE_BLOCK_ELEMENTS // (a.shape[0] * b.shape[1]))
    best = []
    for start in range(0, a.shape[1], block):
        stop = start + block
        cos = (a[:, start:stop] @ b.transpose(1, 2)) / (norm_a[:, start:stop, None] * norm_b[:, None, :])
        best.append(cos.masked_fill(invalid, float("-inf")).max(dim=-1))
    return torch.cat([s for s, _ in best], dim=1), torch.cat([p for _, p in best], dim=1)


def _cosine_banded(
    state: torch.Tensor, norm: torch.Tensor, cur: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best B partner of every A token (even slot) among the B tokens (odd slots) at most `window` slots away.

    A-B distances are odd, so the band is `ceil(window / 2)` shifted dot products `d = 1, 3, ...` over the whole
    sequence, each read to the left and to the right of every A slot. `state [B, n, Dk]`, `norm [B, n]`,
    `cur [B]` current lengths. Returns `(score [B, nA], partner [B, nA])` with the partner as a B index and ties
    to the earliest B slot (as in the dense case). Time O(N * window * Dk), memory O(N * (window + Dk)).

    The rows are laid end to end, so each shift is one batched dot product over contiguous memory (no copy of the
    shifted views); pairs that would cross into the next row are set to -inf.
    """
    batch, n, dim = state.shape
    flat, flat_norm = state.reshape(batch * n, dim), norm.reshape(batch * n)
    slot = torch.arange(0, n, 2, device=state.device)
    cos, partner = [], []
    for d in range(1, window + 1, 2):
        dots = torch.full((batch * n,), float("-inf"), device=state.device, dtype=state.dtype)
        if d < n:  # dots[s] = cos(s, s + d) within a row
            dots[: batch * n - d] = torch.einsum("nd,nd->n", flat[:-d], flat[d:]) / (flat_norm[:-d] * flat_norm[d:])
        dots = dots.view(batch, n)
        dots[:, max(n - d, 0) :] = float("-inf")
        cos += [F.pad(dots, (d, 0), value=float("-inf"))[:, :n:2], dots[:, 0::2]]
        partner += [slot - d, slot + d]
    order = sorted(range(len(partner)), key=lambda k: int(partner[k][0]))  # candidates left to right
    cos = torch.stack([cos[k] for k in order], dim=-1)
    partner = torch.stack([partner[k] for k in order], dim=-1)  # [nA, K] partner slots
    score, best = cos.masked_fill(partner[None] >= cur[:, None, None], float("-inf")).max(dim=-1)
    return score, (partner[None].expand_as(cos).gather(-1, best[..., None]).squeeze(-1) - 1).clamp(min=0) // 2


def bipartite_assign(
    keys: torch.Tensor, lengths: torch.Tensor, num_out: torch.Tensor, window: Optional[int]
) -> torch.Tensor:
    """Runs bipartite merging rounds and returns the output slot of every input token.

    Args:
        keys (`torch.Tensor` of shape `[B, N, Dk]`): merge keys (padding content, NaN included, is never read
            into a valid group).
        lengths (`torch.LongTensor` of shape `[B]`): valid tokens per row.
        num_out (`torch.LongTensor` of shape `[B]`): target count `M` per row, `1 <= M <= lengths`.
        window (`int` or `None`): largest slot distance between merged A and B tokens in the current sequence;
            `None` for Global Merge.

    Returns:
        `torch.LongTensor` of shape `[B, N]`: output slot per input token, `-1` on padding.
    """
    batch, n, dim = keys.shape
    device = keys.device
    pos = torch.arange(n, device=device)
    owner = torch.where(pos[None] < lengths[:, None], pos[None], -1)  # current slot of every input token
    state = keys.detach().float()  # key sums of the current groups; never written in place
    cur = lengths.clone()
    rows = torch.arange(batch, device=device)[:, None]
    while True:
        r = torch.minimum(cur - num_out, cur // 2)
        if not bool((r > 0).any()):
            return owner
        n = state.shape[1]
        norm = state.norm(dim=-1).clamp(min=_EPS)
        if window is None or window >= n - 1:  # the band covers every pair: this *is* Global Merge
            score, partner = _cosine_dense(state[:, 0::2], state[:, 1::2], norm[:, 0::2], norm[:, 1::2], cur // 2)
        else:
            score, partner = _cosine_banded(state, norm, cur, window)
        num_a = score.shape[1]
        score = score.masked_fill(torch.arange(0, n, 2, device=device)[None] >= cur[:, None], float("-inf"))
        order = score.argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(num_a, device=device).expand_as(order))
        merged = rank < r[:, None]  # [B, nA]: the r best A tokens of each row

        # New slot of every current slot: survivors are compacted in order; merged A tokens follow their partner.
        live = pos[None, :n] < cur[:, None]
        keep = live.clone()
        keep[:, 0::2] &= ~merged
        new_slot = keep.cumsum(1) - 1
        dest = new_slot.clone()
        dest[:, 0::2] = torch.where(merged, new_slot[:, 1::2].gather(1, partner), new_slot[:, 0::2])
        cur = cur - r
        n_new = int(cur.max())
        dest = dest.masked_fill(~live, n_new)  # padding slots point past the end

        # Survivors move (a gather), merged A sums are added onto their partners (an index_add over r rows).
        source = torch.zeros(batch, n_new + 1, dtype=torch.long, device=device)
        source.scatter_(1, torch.where(keep, new_slot, n_new), pos[None, :n].expand(batch, -1))
        flat_state = state.reshape(-1, dim)
        new_state = flat_state.index_select(0, (source[:, :n_new] + rows * n).reshape(-1))
        row, a_idx = merged.nonzero(as_tuple=True)
        new_state.index_add_(0, row * n_new + dest[row, 2 * a_idx], flat_state.index_select(0, row * n + 2 * a_idx))
        state = new_state.view(batch, n_new, dim)
        owner = torch.where(owner >= 0, dest.gather(1, owner.clamp(min=0)), -1)


@register_method("ltbm")
@dataclass
class LocalTemporalBipartiteMerge(TokenReducer):
    """Local Temporal Bipartite Merging: bipartite soft matching restricted to a temporal window.

    Compares merge keys `[B, N, Dk]` (the tokens `x [B, N, D]` themselves unless `keys` are given) by cosine
    similarity and merges in rounds until each row holds `M` tokens (see the module docstring and
    :func:`bipartite_assign`). Scores cost O(N * window * Dk) time and O(N * (window + Dk)) memory.

    Args:
        window (`int`, defaults to `DEFAULT_WINDOW`): an A token may merge with a B token at most `window` slots
            away in the current sequence (>= 1). A-B distances are odd, so `2k` behaves exactly like `2k - 1`;
            with `window <= 2` every output token is a contiguous run of input tokens. A window at least as
            long as the sequence gives Global Merge.
    """

    window: int = DEFAULT_WINDOW
    uses_keys = True

    def __post_init__(self) -> None:
        _check_int("window", self.window, 1)

    def assign(self, x, lengths, num_out, *, keys=None, scores=None, generator=None):
        return bipartite_assign(x if keys is None else keys, lengths, num_out, self.window)


@register_method("global")
@dataclass
class GlobalMerge(TokenReducer):
    """Global Merge: LTBM without the window (any A token may merge with any B token), the paper's control.

    Same rounds, scores and tie rules as :class:`LocalTemporalBipartiteMerge`; the dense `A x B` cosine scores are
    computed in blocks of A rows (O(N) memory, O(N^2 * Dk) time). Takes no options (`window` is rejected).
    """

    uses_keys = True

    def assign(self, x, lengths, num_out, *, keys=None, scores=None, generator=None):
        return bipartite_assign(x if keys is None else keys, lengths, num_out, None)
