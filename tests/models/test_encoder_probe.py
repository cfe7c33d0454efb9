import pytest
import torch
from transformers.masking_utils import create_bidirectional_mask

from hf_ltbm.models.encoder_probe import (
    attention_heads,
    capture_last_layer_projections,
    encoder_keys,
    received_attention,
)

from .conftest import QWEN


def test_received_attention_matches_the_encoders_own_attention_weights():
    _, model = QWEN.models()
    model.config.audio_config._attn_implementation = "eager"
    tower = model.model.audio_tower
    tower.config._attn_implementation = "eager"
    inputs = QWEN.inputs([[200, 130]], [("what", "is")])
    frames = (inputs["feature_attention_mask"].sum(-1) - 1) // 2 + 1
    mask_2d = (torch.arange(100)[None] < frames[:, None]).long()
    mask = create_bidirectional_mask(config=tower.config, inputs_embeds=torch.zeros(2, 100, 1), attention_mask=mask_2d)
    with torch.no_grad(), capture_last_layer_projections(tower, queries=True, keys=True) as cap:
        out = tower(inputs["input_features"], attention_mask=mask, output_attentions=True)
    attn = tower.layers[-1].self_attn
    scores = received_attention(cap["q_proj"], cap["k_proj"], attn.num_heads, attn.scaling, frames)
    weights = out.attentions[-1]  # [U, H, Tq, Tk]
    for unit, valid in enumerate(frames.tolist()):
        expected = weights[unit, :, :valid, :].mean(dim=(0, 1))  # mean over heads and valid queries
        pooled = expected[: valid // 2 * 2].view(-1, 2).mean(-1)
        torch.testing.assert_close(scores[unit, : valid // 2], pooled, atol=1e-5, rtol=1e-4)
    assert scores.shape == (2, 50)


def test_encoder_keys_average_heads_and_pool_pairs():
    k = torch.arange(2 * 4 * 8, dtype=torch.float32).view(2, 4, 8)
    keys = encoder_keys(k, num_heads=2)
    assert keys.shape == (2, 2, 4)
    torch.testing.assert_close(keys[0, 0], (k[0, :2].view(2, 2, 4).mean(1)).mean(0))


def test_hooks_are_removed():
    _, model = QWEN.models()
    tower = model.model.audio_tower
    with capture_last_layer_projections(tower, queries=True, keys=True):
        pass
    assert not tower.layers[-1].self_attn.q_proj._forward_hooks


class _PackedAttention(torch.nn.Module):
    """vLLM's Whisper attention layout: one `qkv_proj` returning `(output, bias)`, `q_size` / `kv_size`."""

    def __init__(self, dim: int, heads: int, total_heads: int):
        super().__init__()
        self.num_heads, self.total_num_heads, self.scaling = heads, total_heads, 0.5
        self.q_size = self.kv_size = dim
        self.linear = torch.nn.Linear(dim, 3 * dim)
        self.qkv_proj = torch.nn.Module()
        self.qkv_proj.forward = lambda x: (self.linear(x), None)

    def forward(self, x):
        return self.qkv_proj(x)[0]


def _encoder_with(attn: torch.nn.Module) -> torch.nn.Module:
    """An encoder whose one layer's `self_attn` is `attn` (what the probe reads)."""
    layer = torch.nn.Module()
    layer.self_attn = attn
    encoder = torch.nn.Module()
    encoder.layers = torch.nn.ModuleList([layer])
    return encoder


def _packed_encoder(heads: int = 2, total_heads: int = 2) -> torch.nn.Module:
    return _encoder_with(_PackedAttention(8, heads, total_heads))


def _captured_and_computed(encoder: torch.nn.Module, queries: bool = True) -> tuple[dict, torch.Tensor]:
    """What the probe captures from the encoder's packed layer on random input, and the layer's own `qkv_proj`
    output on it, computed afresh."""
    x = torch.randn(3, 6, 8)
    with torch.no_grad(), capture_last_layer_projections(encoder, queries=queries, keys=True) as cap:
        encoder.layers[-1].self_attn(x)
    return cap, encoder.layers[-1].self_attn.linear(x)


def test_a_packed_qkv_projection_is_split_into_queries_and_keys():
    encoder = _packed_encoder()
    cap, qkv = _captured_and_computed(encoder)
    torch.testing.assert_close(cap["q_proj"], qkv[..., :8])
    torch.testing.assert_close(cap["k_proj"], qkv[..., 8:16])
    assert not encoder.layers[-1].self_attn.qkv_proj._forward_hooks
    cap, _ = _captured_and_computed(encoder, queries=False)
    assert set(cap) == {"k_proj"}


def test_a_tensor_parallel_shard_of_a_packed_projection_is_refused_when_read():
    with capture_last_layer_projections(_packed_encoder(heads=1, total_heads=2), queries=False, keys=False) as cap:
        pass  # settings that read the features: nothing captured, nothing refused
    assert cap == {}
    with pytest.raises(ValueError, match=r"tensor-parallel ranks \(1 of 2 heads here\)"):
        with capture_last_layer_projections(_packed_encoder(heads=1, total_heads=2), queries=False, keys=True):
            pass


def test_grouped_keys_give_the_attention_of_the_repeated_keys():
    """Llama-style attention with fewer key heads (each shared by consecutive query heads), as GLM-ASR's encoder may
    have, reads as the same attention with every key head repeated."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 6, 4 * 3, generator=g), torch.randn(2, 6, 2 * 3, generator=g)  # 4 query heads, 2 key heads
    frames = torch.tensor([6, 4])
    repeated = k.view(2, 6, 2, 3).repeat_interleave(2, dim=2).reshape(2, 6, 12)
    grouped = received_attention(q, k, 4, 0.5, frames, num_key_heads=2)
    torch.testing.assert_close(grouped, received_attention(q, repeated, 4, 0.5, frames))


class _PackedGroupedAttention(torch.nn.Module):
    """vLLM's GLM-ASR encoder attention layout: `qkv_proj` returning `(output, bias)`, heads named
    `num_heads_per_rank` / `num_kv_heads_per_rank` (of `num_heads` in all), `head_dim`, no `q_size` / `kv_size`."""

    def __init__(self, heads: int, kv_heads: int, total_heads: int, head_dim: int = 4):
        super().__init__()
        self.num_heads, self.num_heads_per_rank, self.num_kv_heads_per_rank = total_heads, heads, kv_heads
        self.head_dim = head_dim
        self.linear = torch.nn.Linear(8, (heads + 2 * kv_heads) * head_dim)
        self.qkv_proj = torch.nn.Module()
        self.qkv_proj.forward = lambda x: (self.linear(x), None)

    def forward(self, x):
        return self.qkv_proj(x)[0]


def test_a_packed_projection_without_sizes_is_split_by_its_heads():
    encoder = _encoder_with(_PackedGroupedAttention(heads=2, kv_heads=1, total_heads=2))
    cap, qkv = _captured_and_computed(encoder)
    torch.testing.assert_close(cap["q_proj"], qkv[..., :8])
    torch.testing.assert_close(cap["k_proj"], qkv[..., 8:12])
    assert attention_heads(encoder.layers[-1].self_attn, cap["q_proj"], cap["k_proj"]) == (2, 1, 0.5)
    with pytest.raises(ValueError, match=r"tensor-parallel ranks \(1 of 2 heads here\)"):
        with capture_last_layer_projections(_encoder_with(_PackedGroupedAttention(1, 1, 2)), queries=True, keys=True):
            pass


class _InPlaceRotatingAttention(_PackedGroupedAttention):
    """As vLLM's GLM-ASR encoder does: the queries and keys are rotated in place, in the packed projection's output."""

    def forward(self, x):
        qkv = self.qkv_proj(x)[0]
        qkv[..., :12].mul_(-1.0)
        return qkv


def test_what_is_captured_is_the_projection_before_the_layer_changes_it_in_place():
    cap, qkv = _captured_and_computed(_encoder_with(_InPlaceRotatingAttention(heads=2, kv_heads=1, total_heads=2)))
    torch.testing.assert_close(cap["q_proj"], qkv[..., :8])
    torch.testing.assert_close(cap["k_proj"], qkv[..., 8:12])


def test_an_encoder_without_self_attention_layers_serves_settings_that_read_the_features():
    """Nothing is looked up in the encoder when nothing is captured (an encoder of another layout, a conformer with
    `layers[-1].attn`, still serves every setting that merges by its features)."""
    encoder = torch.nn.Module()
    with capture_last_layer_projections(encoder, queries=False, keys=False) as cap:
        pass
    assert cap == {}
    with pytest.raises(AttributeError):
        with capture_last_layer_projections(encoder, queries=False, keys=True):
            pass
