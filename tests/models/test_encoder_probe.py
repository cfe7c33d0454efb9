import pytest
import torch
from transformers.masking_utils import create_bidirectional_mask

from hf_ltbm.models.encoder_probe import capture_last_layer_projections, encoder_keys, received_attention

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


def _packed_encoder(heads: int = 2, total_heads: int = 2) -> torch.nn.Module:
    layer = torch.nn.Module()
    layer.self_attn = _PackedAttention(8, heads, total_heads)
    encoder = torch.nn.Module()
    encoder.layers = torch.nn.ModuleList([layer])
    return encoder


def test_a_packed_qkv_projection_is_split_into_queries_and_keys():
    encoder = _packed_encoder()
    x = torch.randn(3, 6, 8)
    with torch.no_grad(), capture_last_layer_projections(encoder, queries=True, keys=True) as cap:
        encoder.layers[-1].self_attn(x)
    qkv = encoder.layers[-1].self_attn.linear(x)
    torch.testing.assert_close(cap["q_proj"], qkv[..., :8])
    torch.testing.assert_close(cap["k_proj"], qkv[..., 8:16])
    assert not encoder.layers[-1].self_attn.qkv_proj._forward_hooks
    with capture_last_layer_projections(encoder, queries=False, keys=True) as cap:
        encoder.layers[-1].self_attn(x)
    assert set(cap) == {"k_proj"}


def test_a_tensor_parallel_shard_of_a_packed_projection_is_refused_when_read():
    with capture_last_layer_projections(_packed_encoder(heads=1, total_heads=2), queries=False, keys=False) as cap:
        pass  # settings that read the features: nothing captured, nothing refused
    assert cap == {}
    with pytest.raises(ValueError, match=r"tensor-parallel ranks \(1 of 2 heads here\)"):
        with capture_last_layer_projections(_packed_encoder(heads=1, total_heads=2), queries=False, keys=True):
            pass
