import torch
from transformers.masking_utils import create_bidirectional_mask

from hf_ltbm.models.encoder_probe import capture_last_layer_projections, encoder_keys, received_attention

from .conftest import QWEN


def test_received_attention_matches_the_encoders_own_attention_weights():
    _, model = QWEN.models()
    model.config.audio_config._attn_implementation = "eager"
    tower = model.model.audio_tower
    tower.config._attn_implementation = "eager"
    inputs = QWEN.inputs([[200, 130]], [([5], [6])])
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
