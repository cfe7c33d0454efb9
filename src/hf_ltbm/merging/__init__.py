"""Training-free audio-token reduction in pure PyTorch (no transformers import).

One contract for every method (see :class:`TokenReducer`): each row of `N` valid tokens becomes exactly
`M = output_length(N, ...)` tokens in temporal order, with a per-input `assignment` and per-output `sizes`.
Importing this package registers the built-in methods.
"""

from .api import build_method, merge_tokens
from .base import (
    MergeResult,
    TokenReducer,
    available_methods,
    get_method_class,
    non_default_options,
    output_length,
    pool_by_assignment,
    register_method,
)
from .bipartite import DEFAULT_WINDOW, GlobalMerge, LocalTemporalBipartiteMerge, bipartite_assign
from .pooling import AveragePooling, segment_ids
from .pruning import AttentionPruning, NormPruning, RandomPruning, SegmentTopKPruning, select_top

__all__ = [
    "DEFAULT_WINDOW",
    "AttentionPruning",
    "AveragePooling",
    "GlobalMerge",
    "LocalTemporalBipartiteMerge",
    "MergeResult",
    "NormPruning",
    "RandomPruning",
    "SegmentTopKPruning",
    "TokenReducer",
    "available_methods",
    "bipartite_assign",
    "build_method",
    "get_method_class",
    "non_default_options",
    "merge_tokens",
    "output_length",
    "pool_by_assignment",
    "register_method",
    "segment_ids",
    "select_top",
]
