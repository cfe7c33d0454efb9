"""The contract shared by every token-reduction method (the registry that names them is `registry`, re-exported here).

A method reduces the ``N`` valid tokens of each row to exactly ``M = output_length(N, ...)`` tokens, keeps
temporal order, and reports which output token represents each input token. Every method here is expressed
as an *assignment* of input tokens to output slots; :func:`pool_by_assignment` then turns any assignment
into size-weighted means, so averaging, merging and pruning share one numerically careful code path.

This module is pure PyTorch: it knows nothing of transformers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Optional

import torch

from .registry import (  # noqa: F401  (re-exported)
    _REGISTRY,
    available_methods,
    get_method_class,
    non_default_options,
    register_method,
)

__all__ = [
    "NORM_CANCEL_THRESHOLD",
    "MergeResult",
    "TokenReducer",
    "available_methods",
    "get_method_class",
    "non_default_options",
    "output_length",
    "pool_by_assignment",
    "register_method",
]


@dataclass
class MergeResult:
    """Output of a token-reduction method for a batch of rows.

    Attributes:
        tokens (`torch.Tensor` of shape `[B, M_max, D]`):
            Reduced tokens in temporal order, in the input dtype. Rows shorter than `M_max` are zero-padded.
        lengths (`torch.LongTensor` of shape `[B]`):
            Number of valid output tokens per row (`M` of that row).
        sizes (`torch.LongTensor` of shape `[B, M_max]`):
            How many input tokens each output token stands for (`0` on padding). For every row,
            `sizes[b].sum()` equals the number of input tokens that were kept or merged (all valid tokens for
            the averaging methods, `M` for the pruning methods).
        assignment (`torch.LongTensor` of shape `[B, N]`):
            For every input token, the index of the output token that now represents it; `-1` for tokens
            dropped by pruning and for input padding.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    sizes: torch.Tensor
    assignment: torch.Tensor

    def to(self, device: torch.device | str) -> MergeResult:
        """Moves every tensor of the result to `device`."""
        return MergeResult(*(t.to(device) for t in (self.tokens, self.lengths, self.sizes, self.assignment)))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int >= {minimum}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value}.")
    return value


def check_keep_ratio(keep_ratio: object) -> float:
    """Validates a keep ratio (fraction of tokens kept) and returns it as a float in (0, 1]."""
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)):
        raise TypeError(
            f"`keep_ratio` must be a number in (0, 1] (the fraction of tokens kept), got {keep_ratio!r} "
            f"({type(keep_ratio).__name__})."
        )
    if not (0.0 < keep_ratio <= 1.0) or math.isnan(keep_ratio):
        raise ValueError(
            f"`keep_ratio` must be in (0, 1] (the fraction of tokens kept; 0.25 keeps a quarter), got {keep_ratio}."
        )
    return float(keep_ratio)


def check_count_setting(keep_ratio: object, num_tokens: object) -> None:
    """Raises unless exactly one of `keep_ratio` and `num_tokens` is set, and that one is valid."""
    if (keep_ratio is None) == (num_tokens is None):
        raise ValueError(
            "Set exactly one of `keep_ratio` (fraction of tokens kept, in (0, 1]) or `num_tokens` (int >= 1); "
            f"got keep_ratio={keep_ratio!r}, num_tokens={num_tokens!r}."
        )
    if keep_ratio is not None:
        check_keep_ratio(keep_ratio)
    else:
        _check_int("num_tokens", num_tokens, 1)


def output_length(n: int, *, keep_ratio: Optional[float] = None, num_tokens: Optional[int] = None) -> int:
    """Number of tokens a method outputs for `n` valid input tokens.

    This is the single count function of the package: processors use it to emit placeholders before the model
    sees the audio, and :func:`~hf_ltbm.merge_tokens` always returns exactly this many tokens per row. It depends
    only on `n` and the settings, never on content.

    Args:
        n (`int`): number of valid input tokens (>= 1).
        keep_ratio (`float`, *optional*): fraction of tokens kept, in (0, 1]. The output count is
            `max(1, ceil(keep_ratio * n))`, computed exactly on the decimal value of `keep_ratio`
            (so `keep_ratio=0.1, n=750` gives 75, not 76 from binary rounding).
        num_tokens (`int`, *optional*): a token budget (>= 1): rows with more than `num_tokens` tokens are reduced
            to `num_tokens`, shorter rows pass through unchanged, i.e. `min(num_tokens, n)`.

    Exactly one of `keep_ratio` and `num_tokens` must be given.
    """
    _check_int("n", n, 1)
    check_count_setting(keep_ratio, num_tokens)
    if num_tokens is not None:
        return min(num_tokens, n)
    exact = Fraction(repr(float(keep_ratio))) * n
    return max(1, math.ceil(exact))


#: A merged token whose mean is shorter than this fraction of its members' mean norm (members that cancel out) is
#: left as the plain mean by `preserve_norm`: rescaling a near-zero vector would only amplify rounding noise.
NORM_CANCEL_THRESHOLD = 1e-6


def pool_by_assignment(
    x: torch.Tensor, assignment: torch.Tensor, num_out: int, *, preserve_norm: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Averages input tokens into the output slots given by `assignment`.

    Args:
        x (`torch.Tensor` of shape `[B, N, D]`): input tokens.
        assignment (`torch.LongTensor` of shape `[B, N]`): output slot of each token, `-1` to leave it out.
        num_out (`int`): number of output slots `M_max`.
        preserve_norm (`bool`, defaults to `False`): rescale each slot's mean `a_j` to the mean norm of its members,
            `y_j = a_j * mean_i ||x_i|| / ||a_j||` (norms in float32), so that a merged token is as long as the
            tokens it stands for. A slot of one token, and a slot whose mean is shorter than
            `NORM_CANCEL_THRESHOLD` times that target (members that cancel), keep the plain mean.

    Returns:
        `(tokens, sizes)`: `tokens [B, M_max, D]` in `x.dtype` (means accumulated in float32, zeros where a slot
        receives nothing) and `sizes [B, M_max]` (int64 count of tokens per slot). Differentiable w.r.t. `x`;
        tokens that are left out (including padding, whatever it holds, NaN too) never touch a valid output.
    """
    batch, n, dim = x.shape
    # One extra "dump" slot per row absorbs left-out tokens, then is sliced away.
    slots = num_out + 1
    kept = assignment >= 0
    target = torch.where(kept, assignment, num_out)
    flat = (target + torch.arange(batch, device=x.device)[:, None] * slots).reshape(-1)
    # Left-out tokens (padding included, whatever it holds) only ever reach the dump slot.
    values = x.float().reshape(batch * n, dim)
    sums = x.new_zeros(batch * slots, dim, dtype=torch.float32).index_add_(0, flat, values)
    counts = torch.zeros(batch * slots, dtype=torch.long, device=x.device).index_add_(0, flat, torch.ones_like(flat))
    sums, counts = sums.view(batch, slots, dim)[:, :num_out], counts.view(batch, slots)[:, :num_out]
    means = sums / counts.clamp(min=1)[..., None]
    if preserve_norm:
        # the members' norms; left-out tokens (padding may hold anything, NaN too) are zeroed first, so that they
        # reach neither the dump slot's sum nor, through the norm's backward, a gradient
        left_out = ~kept.reshape(-1, 1)
        norms = torch.linalg.vector_norm(values.masked_fill(left_out, 0.0) if bool(left_out.any()) else values, dim=-1)
        norm_sums = x.new_zeros(batch * slots, dtype=torch.float32).index_add_(0, flat, norms)
        wanted = norm_sums.view(batch, slots)[:, :num_out] / counts.clamp(min=1)
        length = torch.linalg.vector_norm(means, dim=-1)
        rescale = (counts > 1) & (length > NORM_CANCEL_THRESHOLD * wanted)
        means = torch.where(rescale[..., None], means * (wanted / torch.where(rescale, length, 1.0))[..., None], means)
    return means.to(x.dtype), counts


class TokenReducer(ABC):
    """Base class of a token-reduction method.

    A subclass is a small (data)class whose constructor arguments are the method's own options (e.g. LTBM's
    `window`) and whose :meth:`assign` maps input tokens to output slots. Register it with
    :func:`register_method` to make it available by name in :func:`~hf_ltbm.merge_tokens`, the model config and
    the CLI.

    Class attributes declare which optional inputs a method reads, so that passing an input a method would
    silently ignore is an error:

    - `uses_keys`: reads similarity keys `[B, N, Dk]` (defaults to `x` itself).
    - `requires_scores`: needs per-token importance scores `[B, N]`.
    - `uses_generator`: draws random numbers from a `torch.Generator`.
    - `averages`: outputs are size-weighted means of groups (`sizes` sum to the valid length), as opposed to
      selecting tokens (`sizes` all 1).
    """

    name: ClassVar[str] = ""
    uses_keys: ClassVar[bool] = False
    requires_scores: ClassVar[bool] = False
    uses_generator: ClassVar[bool] = False
    averages: ClassVar[bool] = True

    @abstractmethod
    def assign(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        num_out: torch.Tensor,
        *,
        keys: Optional[torch.Tensor] = None,
        scores: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Maps input tokens to output slots.

        Inputs arrive validated: `x [B, N, D]`, `lengths [B]` (int64, in [1, N], on `x.device`),
        `num_out [B]` (int64, `M` per row, `1 <= M <= lengths`), and `keys [B, N, Dk]` / `scores [B, N]` /
        `generator` as declared by the class attributes. `keys` is `None` when the caller gave none: a method that
        uses keys then compares `x` itself.

        Returns:
            `torch.LongTensor` of shape `[B, N]`: output slot of each input token, in `[0, M_b)` for row `b`,
            every slot used at least once, and `-1` for dropped tokens and for padding (positions `>= lengths[b]`).
            Slots are numbered in temporal order: for pooling and pruning the assignment is non-decreasing over
            the kept tokens; for the bipartite methods output `j` is the group whose anchor (the member that
            survived every round) comes `j`-th in time, and groups may interleave in time unless `window <= 2`.
        """

    def __call__(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        num_out: torch.Tensor,
        *,
        keys: Optional[torch.Tensor] = None,
        scores: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        preserve_norm: bool = False,
    ) -> MergeResult:
        """Runs :meth:`assign` and averages the tokens of every slot (:func:`pool_by_assignment`, rescaled to their
        members' mean norm with `preserve_norm`).

        Takes the same validated inputs as :meth:`assign` (`x [B, N, D]`, `lengths [B]`, `num_out [B]`, optional
        `keys [B, N, Dk]`, `scores [B, N]`, `generator`); :func:`~hf_ltbm.merge_tokens` validates them and calls
        this.

        Returns:
            :class:`MergeResult` with `tokens [B, M_max, D]` (`M_max = num_out.max()`), `lengths` (a copy of
            `num_out`), `sizes [B, M_max]` and `assignment [B, N]`.
        """
        assignment = self.assign(x, lengths, num_out, keys=keys, scores=scores, generator=generator)
        num_slots = int(num_out.max()) if num_out.numel() else 0
        tokens, sizes = pool_by_assignment(x, assignment, num_slots, preserve_norm=preserve_norm)
        return MergeResult(tokens=tokens, lengths=num_out.clone(), sizes=sizes, assignment=assignment)
