"""Size-aware (proportional) attention for the language model: a merged audio key of size `k` gets `log(k)` added to
its attention logit for every query, which is exactly the attention that `k` identical copies of that key would get
together (ToMe's proportional attention, applied to the causal language model).

The bias is a per-key vector `key_log_sizes [B, K]` (0 for text and unmerged tokens). It reaches the attention
functions as a keyword argument of the language model's forward, and travels with the KV cache through generation
(the model appends a 0 per generated token). Implemented as wrappers of transformers' own "eager" and "sdpa"
attention functions, registered in its `AttentionInterface` as "size_aware_eager" and "size_aware_sdpa" (with the
same mask functions). When every size is 1 the wrapper calls the wrapped function untouched, so outputs are
bit-identical to plain attention. Flash attention takes no additive bias, so it is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from transformers import AttentionInterface

from ..compat import (
    ALL_ATTENTION_FUNCTIONS,
    ALL_MASK_ATTENTION_FUNCTIONS,
    AttentionMaskInterface,
    base_attention_functions,
)

__all__ = ["PREFIX", "size_aware_name", "base_name", "register_size_aware_attention", "with_size_bias"]

PREFIX = "size_aware_"
SUPPORTED = ("eager", "sdpa")


def with_size_bias(attention: Callable) -> Callable:
    """Wraps an attention function `(module, query [B, H, Q, D], key [B, Hkv, K, D], value, attention_mask, ...)` so
    that it adds `key_log_sizes [B, K']` (K' <= K; missing keys get 0) to the logits of every query."""

    def forward(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        key_log_sizes: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ):
        if key_log_sizes is None or not bool(key_log_sizes.any()):
            return attention(module, query, key, value, attention_mask, **kwargs)
        batch, q_len, k_len = query.shape[0], query.shape[-2], key.shape[-2]
        bias = torch.zeros(batch, k_len, dtype=query.dtype, device=query.device)
        n = min(k_len, key_log_sizes.shape[-1])
        bias[:, :n] = key_log_sizes[:, :n].to(query.device, query.dtype)
        floor = torch.finfo(query.dtype).min
        if attention_mask is None:  # plain causal: the queries are the last q_len positions
            causal = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
            mask = torch.zeros(q_len, k_len, dtype=query.dtype, device=query.device).masked_fill(~causal, floor)
            mask = mask[None, None]
        elif attention_mask.dtype == torch.bool:
            mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device)
            mask = mask.masked_fill(~attention_mask, floor)
        else:
            mask = attention_mask
        mask = mask[..., :k_len] + bias[:, None, None, :]
        return attention(module, query, key, value, mask.clamp(min=floor), **kwargs)

    forward.__name__ = f"size_aware_{getattr(attention, '__name__', 'attention')}"
    return forward


def size_aware_name(implementation: str) -> str:
    """The registered size-aware version of an attention implementation; flash and others are refused."""
    base = base_name(implementation)
    if base not in SUPPORTED:
        raise ValueError(
            "size_aware_attention needs an attention implementation that takes an additive bias "
            f"({', '.join(SUPPORTED)}); the language model uses {implementation!r}. Load the model with "
            "attn_implementation='sdpa' (or 'eager'), or turn size_aware_attention off."
        )
    register_size_aware_attention()
    return PREFIX + base


def base_name(implementation: Optional[str]) -> str:
    """The plain attention implementation behind a (possibly size-aware) name: `"size_aware_sdpa"` -> `"sdpa"`;
    `None` means `"eager"`."""
    implementation = implementation or "eager"
    return implementation[len(PREFIX) :] if implementation.startswith(PREFIX) else implementation


def register_size_aware_attention() -> None:
    """Registers "size_aware_eager" and "size_aware_sdpa" (idempotent)."""
    for base, fn in base_attention_functions().items():
        name = PREFIX + base
        if name not in ALL_ATTENTION_FUNCTIONS:
            AttentionInterface.register(name, with_size_bias(fn))
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
