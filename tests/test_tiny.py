import numpy as np
import pytest
import torch

import hf_ltbm
from hf_ltbm.backbones import backbone_for
from hf_ltbm.tiny import TINY_MODELS, build_tiny_model


@pytest.mark.parametrize("name", TINY_MODELS)
def test_real_audio_front_end_and_25_tokens_per_second(name):
    """The real front end: 30 s of audio is 750 tokens (25 per second; Voxtral: 375, 12.5 per second)."""
    model, processor = build_tiny_model(name, audio_token_merge={"method": "ltbm", "keep_ratio": 0.5})
    backbone = backbone_for(model)
    assert type(model) is backbone.generation_model
    assert not model.training
    inputs = backbone.encode_audio(processor, np.zeros(16000 * 30, dtype=np.float32))
    before, after = model.audio_token_counts(model._unit_mask(inputs))
    n = 375 if backbone.chat_only else 750
    assert int(before.sum()) == n and int(after.sum()) == hf_ltbm.output_length(n, keep_ratio=0.5)
    assert int((inputs["input_ids"] == model.config.audio_token_id).sum()) == int(after.sum())


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, _ = build_tiny_model(seed=1)
    assert torch.equal(torch.rand(3), expected)
    b, _ = build_tiny_model(seed=1)
    c, _ = build_tiny_model(seed=2)
    pa, pb, pc = (next(m.language_model.parameters()) for m in (a.model, b.model, c.model))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_unknown_name():
    with pytest.raises(ValueError, match="Unknown tiny model 'tiny'; choose one of"):
        build_tiny_model("tiny")
