"""Upstream's contract, kept by every merging class of every family: with no setting and with a setting at keep ratio
1.0, `get_audio_features` takes upstream's keywords and returns what upstream returns, `forward(return_dict=False)`
gives upstream's tuple, a prompt given as `inputs_embeds` alone locates its placeholders as upstream does (also while
merging, in `generate()` with beam search and the static cache), the output carries every field of upstream's, and the
forward compiles with `fullgraph=True`. The tiny configs and prompts are those the common model tests use
(`tests/models/upstream/testers.py`)."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

import hf_ltbm
from hf_ltbm import compat

from .upstream.testers import FAMILIES, AudioModelTester

KEEP_ONE = {"method": "ltbm", "keep_ratio": 1.0}
HALF = {"method": "ltbm", "keep_ratio": 0.5}
SETTINGS = {"none": None, "keep-1.0": KEEP_ONE}


@functools.cache
def _models(family_name: str, setting_name: str, base: bool = False):
    """`(upstream, ours, inputs)`: the family's generation (or base) class and its upstream class with the same
    weights, ours carrying the setting, and the common tests' batch of 3 prompts."""
    family = FAMILIES[family_name]
    tester = AudioModelTester(None, family, SETTINGS[setting_name])
    config, inputs = tester.prepare_config_and_inputs_for_common()
    classes = family.classes()
    ours_class = classes[0] if base else classes[-1]
    upstream_config = AudioModelTester(None, family, None).get_config()
    torch.manual_seed(0)
    upstream = ours_class._upstream_class(upstream_config).eval()
    ours = ours_class(config).eval()
    ours.load_state_dict(upstream.state_dict())
    for model in (upstream, ours):
        model.set_attn_implementation("eager")  # attentions are returned by eager attention only
    return upstream, ours, inputs


def _mask_name(family_name: str) -> str | None:
    return FAMILIES[family_name].mask_name


def _audio_inputs(family_name: str, inputs: dict) -> dict:
    """The keyword arguments of upstream's `get_audio_features` for this family's inputs."""
    names = ["input_features", _mask_name(family_name)]
    if family_name == "musicflamingo":
        names.append("input_ids")  # its windows' times come from the placeholders' positions
    return {name: inputs[name] for name in names if name is not None}


def _projected_tokens(output) -> torch.Tensor:
    """The projected audio tokens of a `get_audio_features` output: `pooler_output`, or where an encoder leaves it
    empty (Qwen2.5-Omni's on transformers 5.19) its packed `last_hidden_state`."""
    tokens = output.last_hidden_state if output.pooler_output is None else output.pooler_output
    return torch.cat(list(tokens)) if isinstance(tokens, (list, tuple)) else tokens


FAMILY_NAMES = list(FAMILIES)
#: The families whose upstream inserts the audio into a prompt given as `inputs_embeds` alone, at the placeholders it
#: finds by comparing each position with the placeholder's embedding (`get_placeholder_mask`). Qwen2-Audio inserts
#: audio only into a prompt it embeds itself, and Audio Flamingo 3, Music Flamingo and Voxtral only with `input_ids`
#: (transformers 5.19 to 5.25): there the audio of such a prompt is not used, at any setting, as upstream.
AUDIO_FROM_EMBEDS = {"qwen2_5_omni_thinker"}


@pytest.mark.parametrize("setting_name", SETTINGS)
@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_get_audio_features_takes_upstreams_keywords_and_returns_its_output(family_name, setting_name):
    upstream, ours, inputs = _models(family_name, setting_name)
    audio = _audio_inputs(family_name, inputs)
    layers = ours.config.audio_config.num_hidden_layers
    with torch.no_grad():
        out = ours.get_audio_features(**audio, output_hidden_states=True, output_attentions=True)
        plain = ours.get_audio_features(**audio, return_dict=False)
    assert isinstance(out, BaseModelOutputWithPooling)
    assert len(out.hidden_states) == layers + 1
    assert len(out.attentions) == layers
    assert isinstance(plain, tuple) and torch.equal(plain[0], out.last_hidden_state)
    if hasattr(upstream, "get_audio_features"):  # Qwen2-Audio has none upstream: hf-ltbm's meets the same contract
        with torch.no_grad():
            expected = upstream.get_audio_features(**audio, output_hidden_states=True)
        pooled = _projected_tokens(expected)
        assert torch.equal(_projected_tokens(out).reshape(pooled.shape), pooled)
        for ours_state, upstream_state in zip(out.hidden_states, expected.hidden_states, strict=True):
            assert torch.equal(ours_state, upstream_state)


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_forward_with_return_dict_false_gives_upstreams_tuple(family_name):
    upstream, ours, inputs = _models(family_name, "keep-1.0")
    with torch.no_grad():
        expected = upstream(**inputs, return_dict=False)
        got = ours(**inputs, return_dict=False)
    assert isinstance(got, tuple)
    assert torch.equal(got[0], expected[0])  # the logits


@pytest.mark.parametrize("setting_name", SETTINGS)
@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_a_prompt_given_as_inputs_embeds_alone_is_upstreams(family_name, setting_name):
    upstream, ours, inputs = _models(family_name, setting_name)
    embeds = {**inputs, "inputs_embeds": ours.get_input_embeddings()(inputs["input_ids"])}
    del embeds["input_ids"]
    with torch.no_grad():
        expected = upstream(**embeds).logits
        assert torch.equal(ours(**embeds).logits, expected)
        assert torch.equal(ours(**inputs).logits, upstream(**inputs).logits)


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_a_merged_prompt_given_as_inputs_embeds_alone_equals_the_input_ids_path(family_name):
    """Keep 0.5: the placeholders found in `inputs_embeds` are merged and compacted as those of `input_ids`; where
    upstream uses no audio with `inputs_embeds` alone, neither does the merging model (upstream's output)."""
    upstream, ours, inputs = _models(family_name, "none")
    embeds = {**inputs, "inputs_embeds": ours.get_input_embeddings()(inputs["input_ids"])}
    del embeds["input_ids"]
    with hf_ltbm.audio_token_merge(ours, HALF), torch.no_grad():
        from_ids = ours(**inputs)
        from_embeds = ours(**embeds)
    if family_name not in AUDIO_FROM_EMBEDS:
        with torch.no_grad():
            assert torch.equal(from_embeds.logits, upstream(**embeds).logits)
        return
    assert from_embeds.logits.shape[1] < inputs["input_ids"].shape[1]  # compacted
    if family_name == "qwen2_5_omni_thinker":
        # without input_ids upstream cannot build its time-aligned 3D positions either: the language model numbers
        # the positions, so only the sequence the model runs on is compared
        assert torch.equal(from_embeds.attention_mask, from_ids.attention_mask)
    else:
        torch.testing.assert_close(from_embeds.logits, from_ids.logits, rtol=0, atol=0)


@pytest.mark.parametrize("setting_name", [*SETTINGS, "half"])
@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_generate_from_inputs_embeds_alone_with_beam_search_and_the_static_cache(family_name, setting_name):
    """`generate(inputs_embeds=..., input_features=..., num_beams=2)` without input_ids: upstream's result with no
    setting and at keep 1.0, and the result of the same prompt as input_ids while merging (keep 0.5)."""
    if family_name == "qwen2_5_omni_thinker" and setting_name == "half":
        pytest.skip("without input_ids the thinker's time-aligned positions cannot be built (upstream's rule too)")
    upstream, ours, inputs = _models(family_name, "none" if setting_name == "half" else setting_name)
    embeds = {**inputs, "inputs_embeds": ours.get_input_embeddings()(inputs["input_ids"])}
    del embeds["input_ids"]
    options = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    for extra in ({"num_beams": 2}, {"cache_implementation": "static"}):
        with torch.no_grad():
            if setting_name == "half" and family_name in AUDIO_FROM_EMBEDS:
                with hf_ltbm.audio_token_merge(ours, HALF):
                    got = ours.generate(**embeds, **options, **extra)
                    expected = ours.generate(**inputs, **options, **extra)[:, inputs["input_ids"].shape[1] :]
            elif setting_name == "half":  # no audio used, as upstream
                with hf_ltbm.audio_token_merge(ours, HALF):
                    got = ours.generate(**embeds, **options, **extra)
                expected = upstream.generate(**embeds, **options, **extra)
            else:
                got = ours.generate(**embeds, **options, **extra)
                expected = upstream.generate(**embeds, **options, **extra)
        assert torch.equal(got, expected), extra


@pytest.mark.parametrize("base", [False, True], ids=["head", "base"])
@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_a_merging_output_carries_every_field_of_upstreams(family_name, base):
    if base and len(FAMILIES[family_name].classes()) == 1:
        pytest.skip("this transformers release has no base class for this family")
    upstream, ours, inputs = _models(family_name, "keep-1.0", base=base)
    upstream_type = compat.returned_output_class(type(upstream).forward)
    with torch.no_grad():
        out = ours(**inputs, output_attentions=True, output_hidden_states=True)
        expected = upstream(**inputs, output_attentions=True, output_hidden_states=True)
    assert isinstance(out, upstream_type)
    for field in dataclasses.fields(upstream_type):
        value = getattr(expected, field.name)
        assert (getattr(out, field.name) is None) == (value is None), field.name
    if family_name == "qwen2_5_omni_thinker" and hasattr(expected, "image_outputs"):
        assert torch.equal(out.image_outputs.pooler_output[0], expected.image_outputs.pooler_output[0])


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_the_forward_of_a_text_step_compiles_with_fullgraph_while_merging(family_name):
    """Nothing per call serialises the setting: a decoding-like step (no audio) compiles with `fullgraph=True`."""
    _, ours, inputs = _models(family_name, "keep-1.0")
    ids = inputs["input_ids"][:, -4:].clone()
    ids[ids == ours.config.audio_token_id] = 20
    with torch.no_grad():
        expected = ours(input_ids=ids).logits
        torch.compiler.reset()
        compiled = torch.compile(ours, fullgraph=True, backend="eager")
        assert torch.equal(compiled(input_ids=ids).logits, expected)


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_the_loss_takes_the_calls_loss_arguments_as_upstreams(family_name):
    """`shift_labels` and `num_items_in_batch` reach the loss as upstream passes them (keep 1.0: upstream's loss); a
    prompt compacted in the model refuses `shift_labels`, which are aligned with the uncompacted sequence."""
    upstream, ours, inputs = _models(family_name, "keep-1.0")
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == ours.config.audio_token_id, -100)
    shift_labels = torch.roll(labels, -1, dims=1)
    shift_labels[:, -1] = 7  # a target the unshifted labels do not hold: the loss must read `shift_labels`
    loss_args = {"labels": labels, "shift_labels": shift_labels, "num_items_in_batch": torch.tensor(17)}
    with torch.no_grad():
        expected = upstream(**inputs, **loss_args).loss
        got = ours(**inputs, **loss_args).loss
        assert torch.equal(got, expected)
        if family_name != "qwen2_audio":  # whose upstream loss reads neither (its own cross entropy)
            assert not torch.equal(got, ours(**inputs, labels=labels).loss)
        with hf_ltbm.audio_token_merge(ours, HALF), pytest.raises(ValueError, match="`shift_labels` cannot"):
            ours(**inputs, **loss_args)


def test_precomputed_image_outputs_are_used_and_the_callers_dict_is_left_alone():
    """Qwen2.5-Omni's `mm_encoder_outputs` (transformers 5.20 and later): precomputed image outputs give the logits
    of the pixels, the caller's dict is not modified, and pixels next to them are refused as upstream does."""
    upstream, ours, inputs = _models("qwen2_5_omni_thinker", "keep-1.0")
    if "mm_encoder_outputs" not in compat.forward_parameters(type(upstream).forward):
        pytest.skip("this transformers release's thinker takes no mm_encoder_outputs")
    pixels = {key: inputs.pop(key) for key in ("pixel_values", "image_grid_thw")}
    with torch.no_grad():
        image = ours.get_image_features(pixels["pixel_values"], pixels["image_grid_thw"], return_dict=True)
        given = {"image": image}
        expected = ours(**inputs, **pixels).logits
        got = ours(**inputs, image_grid_thw=pixels["image_grid_thw"], mm_encoder_outputs=given).logits
        assert torch.equal(got, expected) and list(given) == ["image"]
        for model in (upstream, ours):
            with pytest.raises(ValueError, match="cannot specify both"):
                model(**inputs, **pixels, mm_encoder_outputs=given)
