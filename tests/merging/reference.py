"""A slow, loop-based implementation of the bipartite merging spec (DESIGN section 1), used as a test oracle.

It tracks groups of input indices slot by slot, scores candidates in float64 and checks the window of every merge
as it makes it, so an implementation that matches its assignments merges the same pairs in the same rounds.
"""

from __future__ import annotations

import math
from typing import Optional

import torch


def reference_bipartite(
    keys: torch.Tensor, m: int, window: Optional[int]
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Merges one row `keys [N, Dk]` to `m` groups. Returns the groups (in output order) and, per round, the
    (A slot, B slot) pairs that merged."""
    groups = [[i] for i in range(keys.shape[0])]
    sums = [keys[i].double().clone() for i in range(keys.shape[0])]
    rounds = []
    while len(groups) > m:
        n = len(groups)
        r = min(n - m, n // 2)
        best = []
        for a in range(0, n, 2):
            cand = [b for b in range(1, n, 2) if window is None or abs(a - b) <= window]
            cos = [float(torch.nn.functional.cosine_similarity(sums[a], sums[b], dim=0, eps=1e-12)) for b in cand]
            k = max(range(len(cand)), key=lambda t: (cos[t], -t))  # best score, earliest B on ties
            best.append((cos[k], a, cand[k]))
        chosen = sorted(best, key=lambda t: (-t[0], t[1]))[:r]  # best scores, earlier A on ties
        merged = {a: b for _, a, b in chosen}
        assert all(window is None or abs(a - b) <= window for a, b in merged.items())
        rounds.append(sorted(merged.items()))
        for a, b in merged.items():
            groups[b] = groups[b] + groups[a]
            sums[b] = sums[b] + sums[a]
        keep = [s for s in range(n) if s not in merged]
        groups, sums = [sorted(groups[s]) for s in keep], [sums[s] for s in keep]
    assert math.fsum(len(g) for g in groups) == keys.shape[0]
    return groups, rounds


def groups_to_assignment(groups: list[list[int]], n: int) -> torch.Tensor:
    out = torch.full((n,), -1, dtype=torch.long)
    for j, g in enumerate(groups):
        out[g] = j
    return out
