"""The backbone adapter: each registered backbone declares consistent classes, and everything that lists backbones
(Auto classes, tiny models, the CLI, the unit helpers) reads the registry."""

import numpy as np
import pytest
import transformers
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSeq2SeqLM
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

import hf_ltbm
from hf_ltbm.backbones import (
    BACKBONES,
    Backbone,
    backbone_for,
    get_backbone,
    max_audio_seconds,
    register_backbone,
    units_per_clip,
)
from hf_ltbm.loading import SUPPORTED_MODEL_TYPES
from hf_ltbm.models import AudioTokenMergeGenerationMixin, AudioTokenMergeModelMixin
from hf_ltbm.models.units import encoder_tokens
from hf_ltbm.processing import MergeSettingProcessorMixin
from hf_ltbm.tiny import TINY_MODELS, build_tiny_model, build_tiny_processor

BACKBONE_LIST = list(BACKBONES.values())


def test_the_registry_lists_the_paper_backbones_first_everywhere():
    assert list(BACKBONES)[:2] == ["qwen2_audio", "audioflamingo3"]
    whole_checkpoints = tuple(t for b in BACKBONE_LIST for t in b.checkpoint_model_types)  # Qwen2.5-Omni's
    assert SUPPORTED_MODEL_TYPES == tuple(BACKBONES) + whole_checkpoints == (*BACKBONES, "qwen2_5_omni")
    assert TINY_MODELS == tuple(b.tiny_name for b in BACKBONE_LIST)
    assert TINY_MODELS[:2] == ("tiny-random-qwen2-audio", "tiny-random-audioflamingo3")


@pytest.mark.parametrize("backbone", BACKBONE_LIST, ids=repr)
def test_each_declaration_is_consistent_and_registered(backbone):
    assert backbone.config_class.model_type == backbone.model_type
    assert issubclass(backbone.generation_model, AudioTokenMergeGenerationMixin)
    assert issubclass(backbone.processor, (MergeSettingProcessorMixin, backbone.upstream_processor))
    assert backbone.generation_model._model_class is backbone.base_model
    config = backbone.config_class()
    if backbone.base_model is None:  # Qwen2.5-Omni's thinker on transformers 5.19: the head holds the model methods
        assert issubclass(backbone.generation_model, AudioTokenMergeModelMixin)
        assert type(config) not in AutoModel._model_mapping
    else:
        assert issubclass(backbone.base_model, AudioTokenMergeModelMixin)
        assert AutoModel._model_mapping[type(config)] is backbone.base_model
    autos = [AutoModelForSeq2SeqLM, AutoModelForPreTraining]
    autos += [getattr(transformers, name) for name in backbone.extra_auto_classes]
    assert all(auto._model_mapping[type(config)] is backbone.generation_model for auto in autos)
    assert PROCESSOR_MAPPING[type(config)] is backbone.processor
    assert backbone_for(config) is backbone and get_backbone(backbone.model_type) is backbone
    assert getattr(hf_ltbm, backbone.generation_model.__name__) is backbone.generation_model


@pytest.mark.parametrize("backbone", BACKBONE_LIST, ids=repr)
def test_tiny_models_and_unit_helpers_come_from_the_declaration(backbone):
    processor = build_tiny_processor(backbone.tiny_name)
    assert type(processor) is backbone.processor and backbone_for(processor) is backbone
    model, _ = build_tiny_model(backbone.tiny_name)
    assert type(model) is backbone.generation_model and backbone_for(model) is backbone
    assert units_per_clip(processor, [16000, 40 * 16000]) == backbone.units_per_clip(processor, [16000, 40 * 16000])
    assert max_audio_seconds(processor) == backbone.max_audio_seconds(processor)


def test_unit_helpers_per_backbone():
    qwen, af3 = (build_tiny_processor(name) for name in TINY_MODELS[:2])
    assert units_per_clip(qwen, [16000, 40 * 16000]) == [1, 1] and max_audio_seconds(qwen) == 30
    assert units_per_clip(af3, [16000, 40 * 16000, 30 * 16000]) == [1, 2, 1] and max_audio_seconds(af3) == 600


def test_unknown_backbones_are_named():
    with pytest.raises(
        ValueError, match="no backbone for model_type 'whisper'; supported: qwen2_audio, audioflamingo3"
    ):
        get_backbone("whisper")
    assert backbone_for(object()) is None
    with pytest.raises(ValueError, match="WhisperProcessor is not the processor of a backbone"):
        units_per_clip(transformers.WhisperProcessor.__new__(transformers.WhisperProcessor), [1])


def test_a_model_type_is_registered_once():
    class Duplicate(Backbone):
        model_type = "qwen2_audio"

    with pytest.raises(ValueError, match="already registered for model_type 'qwen2_audio'"):
        register_backbone(Duplicate)
    assert type(BACKBONES["qwen2_audio"]).__name__ == "Qwen2AudioBackbone"


LENGTHS = [1, 159, 160, 161, 320, 321, 16000, 479999, 480000, 480001, 480160, 480321, 1000000, 1440000]


@pytest.mark.parametrize("backbone", BACKBONE_LIST, ids=repr)
def test_the_unit_layout_counts_what_the_processor_makes(backbone):
    """The declared layout (what the merging processors and the vLLM plugin count with) agrees with the stock
    feature extraction: the rows of `input_features` per clip and the encoder tokens of each from its mask (or, with
    no mask, the placeholders per chunk the stock prompt holds)."""
    processor = build_tiny_processor(backbone.tiny_name)
    layout = backbone.unit_layout(processor)
    rng = np.random.default_rng(0)
    for length in [n for n in LENGTHS if n <= layout.max_seconds * layout.sampling_rate]:
        clip = (0.1 * rng.standard_normal(length)).astype(np.float32)
        inputs = backbone.encode_audio(processor, clip)
        assert inputs["input_features"].shape[0] == layout.units(length) == units_per_clip(processor, [length])[0]
        if backbone.feature_mask is None:
            per_unit = int((inputs["input_ids"] == processor.audio_token_id).sum()) // layout.units(length)
            assert layout.tokens(length) == [per_unit] * layout.units(length)
        else:
            if backbone.mel_frames_per_token == 4:  # Whisper's pooled frames, counted as upstream's encoders do
                assert layout.tokens(length) == encoder_tokens(inputs[backbone.feature_mask].sum(-1)).tolist()
            # and the placeholders the stock processor writes for the clip (upstream's own count)
            placeholder = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
            assert sum(layout.tokens(length)) == int((inputs["input_ids"] == placeholder).sum())
    if layout.max_units == 1:  # a longer clip: the stock feature extractor keeps its first window
        mask = processor.feature_extractor(
            np.zeros(45 * layout.sampling_rate, np.float32),
            sampling_rate=layout.sampling_rate,
            return_attention_mask=True,
            return_tensors="pt",
        )["attention_mask"]
        assert layout.unit_frames(45 * layout.sampling_rate) == mask.sum(-1).tolist()
