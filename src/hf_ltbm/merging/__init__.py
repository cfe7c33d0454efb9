"""Training-free audio-token reduction in pure PyTorch (no transformers import).

One contract for every method (see :class:`TokenReducer`): each row of `N` valid tokens becomes exactly
`M = output_length(N, ...)` tokens in temporal order, with a per-input `assignment` and per-output `sizes`.
The registry lists the built-in methods by name without importing them (nor torch); the names below are loaded when
first used.
"""

from __future__ import annotations

from ..lazy import lazy_exports

#: Name -> the module (relative to this package) that defines it.
_EXPORTS = {
    "build_method": ".api",
    "merge_tokens": ".api",
    **dict.fromkeys(
        ("NORM_CANCEL_THRESHOLD", "MergeResult", "TokenReducer", "output_length", "pool_by_assignment"), ".base"
    ),
    **dict.fromkeys(
        ("DEFAULT_WINDOW", "available_methods", "get_method_class", "non_default_options", "register_method"),
        ".registry",
    ),
    **dict.fromkeys(("GlobalMerge", "LocalTemporalBipartiteMerge", "bipartite_assign"), ".bipartite"),
    **dict.fromkeys(("AveragePooling", "segment_ids"), ".pooling"),
    **dict.fromkeys(
        ("AttentionPruning", "NormPruning", "RandomPruning", "SegmentTopKPruning", "select_top"), ".pruning"
    ),
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
