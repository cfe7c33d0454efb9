"""Reads merge keys and attention scores out of the last self-attention layer of a Whisper-style audio encoder.

Forward hooks capture the last layer's query and key projections while the encoder runs; nothing in the encoder's
computation changes. Both are pooled from the encoder's frame rate (50 Hz) to its token rate (25 Hz) the way the
encoder pools its output (pairs of frames averaged).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import torch
from torch import nn

__all__ = ["attention_heads", "capture_last_layer_projections", "encoder_keys", "pool_pairs", "received_attention"]


def _rank_heads(attn: nn.Module) -> tuple[int, int]:
    """`(heads on this rank, heads in all)` of a packed (vLLM) attention layer: vLLM's Whisper names them `num_heads`
    / `total_num_heads`, its GLM-ASR encoder `num_heads_per_rank` / `num_heads`."""
    if hasattr(attn, "num_heads_per_rank"):
        return attn.num_heads_per_rank, attn.num_heads
    return attn.num_heads, getattr(attn, "total_num_heads", attn.num_heads)


def attention_heads(attn: nn.Module, q_proj: Optional[torch.Tensor], k_proj: torch.Tensor) -> tuple[int, int, float]:
    """`(query heads, key heads, query scaling)` of an encoder's attention layer, read off the widths of its captured
    projections `[U, T, D_q]` / `[U, T, D_k]` and the layer's `head_dim` (so that Whisper's attention, Llama-style
    attention with grouped keys, as GLM-ASR's encoder has, and vLLM's packed layers all read alike); `q_proj` may be
    `None` when only keys were captured (then query heads = key heads)."""
    head_dim = attn.head_dim
    key_heads = k_proj.shape[-1] // head_dim
    query_heads = key_heads if q_proj is None else q_proj.shape[-1] // head_dim
    return query_heads, key_heads, getattr(attn, "scaling", head_dim**-0.5)


@contextmanager
def capture_last_layer_projections(encoder: nn.Module, queries: bool, keys: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Captures `q_proj`/`k_proj` outputs `[U, T, D]` of the encoder's last layer into the yielded dict.

    The layer's attention holds `q_proj` and `k_proj` (transformers), or one packed `qkv_proj` (vLLM's encoders, which
    return `(output, bias)`; queries and keys are split out of it: `q_size` / `kv_size` where the layer has them, as
    vLLM's Whisper does, else its heads on this rank times `head_dim`, as vLLM's GLM-ASR encoder has them).
    """
    captured: dict[str, torch.Tensor] = {}
    if not (queries or keys):  # settings that read the features: the encoder's layers are not looked at
        yield captured
        return
    attn = encoder.layers[-1].self_attn
    handles = []
    if not hasattr(attn, "q_proj") and hasattr(attn, "qkv_proj"):
        heads, total = _rank_heads(attn)
        if heads != total:
            raise ValueError(
                f"The audio encoder's attention is split over tensor-parallel ranks ({heads} of {total} heads here): "
                "a setting that reads its keys or attention scores needs all heads; run the encoder unsharded "
                "(tensor_parallel_size=1) or use one that reads the features."
            )
        if hasattr(attn, "q_size"):
            q_size, kv_size = attn.q_size, attn.kv_size
        else:
            q_size, kv_size = heads * attn.head_dim, getattr(attn, "num_kv_heads_per_rank", heads) * attn.head_dim

        def split(_module: nn.Module, _inputs: object, out: object) -> None:
            # copies: vLLM's GLM-ASR encoder rotates its queries and keys in place, in this very tensor
            qkv = (out[0] if isinstance(out, tuple) else out).detach()
            if queries:
                captured["q_proj"] = qkv[..., :q_size].clone()
            if keys:
                captured["k_proj"] = qkv[..., q_size : q_size + kv_size].clone()

        handles.append(attn.qkv_proj.register_forward_hook(split))
    else:
        for name, wanted in (("q_proj", queries), ("k_proj", keys)):
            if wanted:
                handles.append(
                    getattr(attn, name).register_forward_hook(
                        lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach())
                    )
                )
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def pool_pairs(x: torch.Tensor) -> torch.Tensor:
    """Averages consecutive frame pairs along dim 1 (the encoder's AvgPool1d(2, 2)), dropping an odd last frame."""
    t = x.shape[1] // 2 * 2
    return x[:, :t].unflatten(1, (t // 2, 2)).mean(2)


def encoder_keys(k_proj: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Last-layer keys averaged over heads and pooled to the token rate: `[U, T, D] -> [U, T // 2, D // num_heads]`."""
    u, t, d = k_proj.shape
    return pool_pairs(k_proj.float().view(u, t, num_heads, d // num_heads).mean(2))


def received_attention(
    q_proj: torch.Tensor,
    k_proj: torch.Tensor,
    num_heads: int,
    scaling: float,
    frame_lengths: torch.Tensor,
    chunk_heads: Optional[int] = None,
    num_key_heads: Optional[int] = None,
) -> torch.Tensor:
    """Attention each frame receives in the last layer, averaged over heads and valid queries, pooled to tokens.

    Args:
        q_proj (`torch.Tensor` of shape `[U, T, D]`), k_proj (`[U, T, D_k]`): the layer's query and key projections.
        num_heads (`int`), scaling (`float`): the layer's (query) head count and query scaling.
        frame_lengths (`torch.LongTensor` of shape `[U]`): valid frames per unit (padding frames are masked as keys
            and ignored as queries).
        chunk_heads (`int`, *optional*): heads processed at once (memory `U * chunk_heads * T^2`); default all.
        num_key_heads (`int`, *optional*): key heads where fewer than `num_heads` (grouped keys, each shared by
            `num_heads // num_key_heads` consecutive query heads); default `num_heads`.

    Returns:
        `torch.Tensor` of shape `[U, T // 2]` (float32).
    """
    u, t, d = q_proj.shape
    hd = d // num_heads
    q = (q_proj.float() * scaling).view(u, t, num_heads, hd).transpose(1, 2)
    k = k_proj.float().view(u, t, num_key_heads or num_heads, hd).transpose(1, 2)
    if k.shape[1] != num_heads:
        k = k.repeat_interleave(num_heads // k.shape[1], dim=1)
    valid = torch.arange(t, device=q.device)[None] < frame_lengths.to(q.device)[:, None]  # [U, T]
    total = q.new_zeros(u, t)
    step = chunk_heads or num_heads
    for h in range(0, num_heads, step):
        logits = q[:, h : h + step] @ k[:, h : h + step].transpose(-1, -2)  # [U, h, Tq, Tk]
        probs = logits.masked_fill(~valid[:, None, None, :], float("-inf")).softmax(-1)
        probs = probs.masked_fill(~valid[:, None, :, None], 0.0)
        total += probs.sum(dim=(1, 2))
    total = total / (num_heads * frame_lengths.to(q.device).clamp(min=1)[:, None])
    return pool_pairs(total[..., None])[..., 0]
