"""accelerate placement: a model split across devices (here CPU and disk offload) gives the single-device output."""

import torch
from transformers import AutoModelForSeq2SeqLM

from .conftest import TEXTS, UNITS

SETTING = {"method": "ltbm", "keep_ratio": 0.5}
DEVICE_MAP = {
    "model.audio_tower": "cpu",
    "model.language_model.embed_tokens": "cpu",
    "model.language_model.layers.0": "cpu",
    "model.language_model.layers.1": "disk",
    "model.language_model.norm": "cpu",
    "model.language_model.rotary_emb": "cpu",
    "lm_head": "disk",
}


def test_offloaded_model_matches_single_device(backbone, tmp_path):
    up, _ = backbone.models()
    up.save_pretrained(tmp_path / "ckpt")
    single = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ckpt", audio_token_merge=SETTING)
    placed = {**DEVICE_MAP, **dict.fromkeys(backbone.other_modules, "cpu")}
    device_map = {backbone.module(name): device for name, device in placed.items()}
    split = AutoModelForSeq2SeqLM.from_pretrained(
        tmp_path / "ckpt", audio_token_merge=SETTING, device_map=device_map, offload_folder=tmp_path / "offload"
    )
    assert type(split) is backbone.merging and split.hf_device_map["lm_head"] == "disk"
    inputs = backbone.inputs(UNITS, TEXTS)
    with torch.no_grad():
        assert torch.equal(split(**inputs).logits, single(**inputs).logits)
    greedy = {"max_new_tokens": 4, "do_sample": False}
    assert torch.equal(split.generate(**inputs, **greedy), single.generate(**inputs, **greedy))
