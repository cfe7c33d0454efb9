"""`merge_tokens`: the one entry point to every token-reduction method, with input validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import torch

from .base import MergeResult, TokenReducer, check_count_setting, get_method_class, output_length

__all__ = ["build_method", "merge_tokens"]


def build_method(method: Union[str, TokenReducer] = "ltbm", **options: Any) -> TokenReducer:
    """Instantiates a registered method by name with its own options (e.g. `window` for `"ltbm"`).

    An option the method does not take raises a `ValueError` that lists the options it does take.
    """
    if isinstance(method, TokenReducer):
        if options:
            raise ValueError(
                f"Options {sorted(options)} cannot be combined with an already built method instance {method!r}."
            )
        return method
    cls = get_method_class(method)
    fields = getattr(cls, "__dataclass_fields__", {})
    unknown = sorted(set(options) - set(fields))
    if unknown:
        takes = ", ".join(f"`{f}`" for f in fields) or "no options"
        hint = " (use method='ltbm' for a windowed merge)" if method == "global" and "window" in unknown else ""
        raise ValueError(
            f"method={method!r} does not take {', '.join(f'`{u}`' for u in unknown)}; it takes {takes}{hint}."
        )
    return cls(**options)


def _check_tensor(name: str, value: Any, shape: str, ndim: int, floating: bool = True) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape {shape}, got {type(value).__name__}.")
    if value.ndim != ndim:
        raise ValueError(f"`{name}` must have shape {shape} ({ndim} dims), got shape {tuple(value.shape)}.")
    if floating and not value.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {value.dtype}.")
    return value


def _check_lengths(lengths: Any, batch: int, n: int, device: torch.device) -> torch.Tensor:
    if lengths is None:
        return torch.full((batch,), n, dtype=torch.long, device=device)
    if isinstance(lengths, Sequence) and not isinstance(lengths, (str, bytes)):
        lengths = torch.tensor(list(lengths))
    if not isinstance(lengths, torch.Tensor) or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"`lengths` must be an integer tensor or a list of ints of shape [B], got {lengths!r}.")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"`lengths` must have shape [B] = [{batch}], got shape {tuple(lengths.shape)}.")
    bad = (lengths < 1) | (lengths > n)
    if bool(bad.any()):
        raise ValueError(
            f"`lengths` must lie in [1, N] = [1, {n}] (valid tokens per row, padding at the end), "
            f"got {lengths.tolist()}."
        )
    return lengths.to(device=device, dtype=torch.long)


def merge_tokens(
    x: torch.Tensor,
    lengths: Optional[Union[torch.Tensor, Sequence[int]]] = None,
    *,
    method: Union[str, TokenReducer] = "ltbm",
    keep_ratio: Optional[float] = None,
    num_tokens: Optional[int] = None,
    window: Optional[int] = None,
    keys: Optional[torch.Tensor] = None,
    scores: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    preserve_norm: bool = False,
    **options: Any,
) -> MergeResult:
    """Reduces each row of audio tokens to exactly `output_length(lengths[b], ...)` tokens, in temporal order.

    Args:
        x (`torch.Tensor` of shape `[B, N, D]`): tokens (floating point; computed in float32, returned in `x.dtype`).
        lengths (`torch.LongTensor` or list of `int`, shape `[B]`, *optional*): valid tokens per row, in `[1, N]`;
            padding sits at the end of a row and never reaches a valid output. `None`: every token is valid.
        method (`str` or `TokenReducer`, defaults to `"ltbm"`): a registered method name (see
            :func:`~hf_ltbm.available_methods`: `"ltbm"`, `"global"`, `"pool"`, `"prune_norm"`,
            `"prune_attention"`, `"segment_topk"`, `"random"`, ...) or a built instance.
        keep_ratio (`float`, *optional*): fraction of tokens kept, in (0, 1]; `M = max(1, ceil(keep_ratio * N))`.
        num_tokens (`int`, *optional*): token budget (>= 1), `M = min(num_tokens, N)`. Set exactly one of the two.
        window (`int`, *optional*): `"ltbm"` only: largest slot distance between merged tokens in the current
            sequence (>= 1). `None` uses the method's default (`hf_ltbm.merging.DEFAULT_WINDOW`).
        keys (`torch.Tensor` of shape `[B, N, Dk]`, *optional*): similarity keys for the merging methods
            (default: `x`); merged by the same size-weighted means as the tokens.
        scores (`torch.Tensor` of shape `[B, N]`, *optional*): importance per token for score-based pruning
            (required by `"prune_attention"` and by `"segment_topk"` with `score="attention"`).
        generator (`torch.Generator`, *optional*): random source of `"random"`.
        preserve_norm (`bool`, defaults to `False`): a merged token keeps the mean norm of the input tokens it stands
            for: the size-weighted mean `a_j` is rescaled to `mean_i ||x_i|| / ||a_j||` times itself (norms in
            float32; a single token, keep ratio 1.0 and members that cancel out are left unchanged). Only for the
            methods that average (`"ltbm"`, `"global"`, `"pool"`, ...); a pruning method refuses it.
        **options: further options of the method (e.g. `num_segments` for `"segment_topk"`).

    Returns:
        :class:`~hf_ltbm.MergeResult` with `tokens [B, M_max, D]`, `lengths [B]`, `sizes [B, M_max]` and
        `assignment [B, N]`.

    Results are bitwise deterministic on CPU. On CUDA the group sums use `index_add_`, whose accumulation order can
    change the last bit of merged tokens between runs unless `torch.use_deterministic_algorithms(True)` is set.

    Example:

    ```python
    >>> import torch, hf_ltbm
    >>> x = torch.randn(2, 750, 1280)
    >>> out = hf_ltbm.merge_tokens(x, [750, 500], method="ltbm", keep_ratio=0.25, window=3)
    >>> out.tokens.shape, out.lengths.tolist()
    (torch.Size([2, 188, 1280]), [188, 125])
    ```
    """
    _check_tensor("x", x, "[B, N, D]", 3)
    batch, n, _ = x.shape
    if n == 0:
        raise ValueError("`x` must hold at least one token per row (N >= 1), got N = 0.")
    check_count_setting(keep_ratio, num_tokens)
    if window is not None:
        options["window"] = window
    reducer = build_method(method, **options)
    lengths = _check_lengths(lengths, batch, n, x.device)
    if not isinstance(preserve_norm, bool):
        raise TypeError(f"`preserve_norm` must be True or False, got {preserve_norm!r}.")
    if preserve_norm and not reducer.averages:
        raise ValueError(
            f"`preserve_norm=True` rescales averaged tokens; method {reducer.name!r} selects tokens without averaging "
            "them (each output is one input token, whose norm is already its own). Use an averaging method or "
            "preserve_norm=False."
        )

    if keys is not None:
        if not reducer.uses_keys:
            raise ValueError(f"`keys` is only used by the merging methods; method {reducer.name!r} does not read it.")
        _check_tensor("keys", keys, "[B, N, Dk]", 3)
        if keys.shape[:2] != x.shape[:2]:
            raise ValueError(f"`keys` must have shape [B, N, Dk] = [{batch}, {n}, Dk], got {tuple(keys.shape)}.")
    if scores is not None:
        if not reducer.requires_scores:
            raise ValueError(
                f"`scores` is only used by score-based pruning; method {reducer.name!r} does not read it."
            )
        _check_tensor("scores", scores, "[B, N]", 2)
        if scores.shape != x.shape[:2]:
            raise ValueError(f"`scores` must have shape [B, N] = [{batch}, {n}], got {tuple(scores.shape)}.")
    elif reducer.requires_scores:
        raise ValueError(
            f"method {reducer.name!r} needs `scores` of shape [B, N] (e.g. the attention each token receives in the "
            "last encoder layer)."
        )
    if generator is not None and not reducer.uses_generator:
        raise ValueError(f"`generator` is only used by random methods; method {reducer.name!r} does not read it.")

    counts = [output_length(length, keep_ratio=keep_ratio, num_tokens=num_tokens) for length in lengths.tolist()]
    num_out = torch.tensor(counts, dtype=torch.long, device=x.device)
    return reducer(x, lengths, num_out, keys=keys, scores=scores, generator=generator, preserve_norm=preserve_norm)
