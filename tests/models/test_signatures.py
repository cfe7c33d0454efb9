"""The merging classes' public signatures are upstream's, and a canary fails when upstream adds a forward parameter
that the merging path does not implement (generate() reads kwarg validation, `logits_to_keep` and
`mm_encoder_outputs` support from `inspect.signature(self.forward)`)."""

import inspect

import pytest
from transformers import GenerationMixin

import hf_ltbm
from hf_ltbm import compat

CLASSES = [
    hf_ltbm.Qwen2AudioLTBMModel,
    hf_ltbm.Qwen2AudioLTBMForConditionalGeneration,
    hf_ltbm.AudioFlamingo3LTBMModel,
    hf_ltbm.AudioFlamingo3LTBMForConditionalGeneration,
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_forward_signature_is_upstreams(cls):
    assert inspect.signature(cls.forward) == inspect.signature(cls._upstream_class.forward)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_canary_every_upstream_forward_parameter_is_implemented_by_the_merging_path(cls):
    parameters = inspect.signature(cls._upstream_class.forward).parameters
    named = {n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
    new = sorted(named - cls.merging_parameters())
    assert not new, (
        f"transformers added {new} to {cls._upstream_class.__name__}.forward: implement them in the merging path "
        f"(hf_ltbm.models.setting) and add them to `_merging_parameters`; until then the merging path refuses them."
    )
    # ... and the KV cache is one of them under the release's own name
    assert compat.cache_parameter(cls._upstream_class.forward) in named


def test_generation_reads_the_same_capabilities_as_upstream(backbone):
    up, ours = backbone.models()
    assert inspect.signature(ours.forward) == inspect.signature(up.forward)
    assert inspect.signature(ours.prepare_inputs_for_generation) == inspect.signature(up.prepare_inputs_for_generation)
    assert inspect.signature(backbone.merging.prepare_inputs_for_generation) == inspect.signature(
        GenerationMixin.prepare_inputs_for_generation
    )
    for capability in ("_supports_logits_to_keep", "_supports_mm_encoder_outputs"):
        if hasattr(up, capability):
            assert getattr(ours, capability)() == getattr(up, capability)(), capability


def test_a_value_for_an_unimplemented_upstream_parameter_is_refused_with_merging_on(backbone, monkeypatch):
    _, ours = backbone.models()
    ours.set_audio_token_merge("ltbm")
    monkeypatch.setattr(type(ours), "_merging_parameters", type(ours)._merging_parameters - {"use_cache"})
    with pytest.raises(TypeError, match=r"takes \['use_cache'\], which the merging path"):
        ours(**backbone.inputs([[170]], [("what", "is")], "ltbm"), use_cache=False)
