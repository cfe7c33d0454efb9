import torch
from transformers import (
    AudioFlamingo3Config,
    AutoModel,
    AutoModelForMultimodalLM,
    AutoModelForPreTraining,
    AutoModelForSeq2SeqLM,
    Qwen2AudioConfig,
)
from transformers.conversion_mapping import get_checkpoint_conversion_mapping

import hf_ltbm
from hf_ltbm.registration import register

from .models.conftest import QWEN


def test_registration_is_idempotent_and_complete():
    register()
    register()
    mapping = AutoModelForSeq2SeqLM._model_mapping
    assert mapping[Qwen2AudioConfig] is hf_ltbm.Qwen2AudioLTBMForConditionalGeneration
    assert mapping[AudioFlamingo3Config] is hf_ltbm.AudioFlamingo3LTBMForConditionalGeneration
    assert (
        AutoModelForPreTraining._model_mapping[AudioFlamingo3Config]
        is hf_ltbm.AudioFlamingo3LTBMForConditionalGeneration
    )
    assert AutoModelForMultimodalLM._model_mapping[Qwen2AudioConfig] is hf_ltbm.Qwen2AudioLTBMForConditionalGeneration
    assert AutoModel._model_mapping[Qwen2AudioConfig] is hf_ltbm.Qwen2AudioLTBMModel
    for cls in (hf_ltbm.Qwen2AudioLTBMForConditionalGeneration, hf_ltbm.AudioFlamingo3LTBMModel):
        assert get_checkpoint_conversion_mapping(cls.__name__) is not None


def test_lm_head_loads_from_a_native_checkpoint(tmp_path):
    """Without the conversion mapping transformers treats the subclass as custom code and `lm_head` loads random."""
    up, _ = QWEN.models(seed=5)
    up.save_pretrained(tmp_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, audio_token_merge="ltbm")
    assert torch.equal(model.lm_head.weight, up.lm_head.weight)
    assert torch.equal(model.model.language_model.embed_tokens.weight, up.model.language_model.embed_tokens.weight)
