"""LoRA on the language model of a merging model: train a step, save, reload, merge_and_unload."""

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from .conftest import TEXTS, UNITS
from .tiny import AUDIO_TOKEN_ID

# `target_modules=["q_proj", "v_proj"]` would also hit the Whisper encoder's attention: restrict it with a regex (the
# language model is `model.language_model`, or `model` in Qwen2.5-Omni's flat thinker on transformers 5.19).
LANGUAGE_MODEL_ONLY = r"(.*language_model|model)\.layers\.\d+\.self_attn\.(q_proj|v_proj)"


def test_lora_trains_saves_reloads_and_merges(backbone, tmp_path):
    _, model = backbone.models()
    model.set_audio_token_merge({"method": "ltbm", "keep_ratio": 0.5})
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=LANGUAGE_MODEL_ONLY, lora_dropout=0.0))
    lora_modules = [n for n, _ in peft_model.named_modules() if n.endswith("lora_A")]
    layers = backbone.module("model.language_model.layers")
    assert lora_modules and all(layers in n and "audio_tower" not in n for n in lora_modules)

    inputs = backbone.inputs(UNITS, TEXTS, padding_side="right")
    labels = inputs["input_ids"].masked_fill(
        (inputs["input_ids"] == AUDIO_TOKEN_ID) | (inputs["attention_mask"] == 0), -100
    )
    peft_model.train()
    for module in peft_model.modules():  # make the LoRA B matrices non-zero after one step
        if hasattr(module, "lora_B"):
            for p in module.lora_B.parameters():
                p.data.normal_(0, 0.02)
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.1)
    loss = peft_model(**inputs, labels=labels).loss
    loss.backward()
    optimizer.step()
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**inputs).logits
    peft_model.save_pretrained(tmp_path / "adapter")

    _, fresh = backbone.models()
    fresh.set_audio_token_merge({"method": "ltbm", "keep_ratio": 0.5})
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected)
    merged = reloaded.merge_and_unload()
    assert type(merged) is backbone.merging
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, expected, atol=1e-5, rtol=1e-4)


def test_plain_target_names_also_hit_the_audio_encoder(backbone):
    """The trap the regex avoids, documented by a test."""
    _, model = backbone.models()
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    names = [n for n, _ in peft_model.named_modules() if n.endswith("lora_A")]
    layers = backbone.module("model.language_model.layers")
    assert any("audio_tower" in n for n in names) and any(layers in n for n in names)
