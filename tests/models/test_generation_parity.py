"""Generation parity with upstream transformers: every path that transformers' `GenerationTesterMixin` walks, run on
hf-ltbm's merging generation class and on the upstream class it extends, loaded with the same weights, must give the
same outputs, bit for bit.

The mixin itself is not shipped in the transformers sdist (`tests/models/upstream/harness.py` replaces it with an
empty stand-in), so its paths are walked here, for each family of `tests/models/upstream/testers.py` and each setting
that promises upstream's behaviour: no `audio_token_merge` at all, and every averaging method at keep ratio 1.0 (each
group holds one token, so the merged tokens are the encoder's own and the prompt keeps its length).

- decoding strategies: greedy, sampling (same seed before each call), beam search with one and with two returned
  sequences, each from `input_ids` and from `inputs_embeds` (no `input_ids`; the audio and image inputs next to them);
- every output of `return_dict_in_generate=True` (greedy, sampling, beam search with two sequences): sequences,
  scores, logits, attentions (eager attention on both models), hidden states, beam indices and scores, the KV cache;
- the static cache (`cache_implementation="static"`; greedy and beam search with two sequences);
- `torch.compile` with `fullgraph=True` (merging off and `ltbm` only, greedy from `input_ids`: compiling is slow): the
  compiled forward `generate` decodes with (static cache and a `CompileConfig`, forced on CPU), and
  `torch.compile(model.forward, fullgraph=True)` on a text-only prompt, whose logits must equal upstream's compiled
  logits exactly and the eager ones up to float noise (inductor reorders float reductions, for upstream too).

Where upstream's own class raises on a path, that path compares nothing and the case is skipped with upstream's
error; a failure of the merging class alone is a defect and fails the test.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import pytest
import torch
import transformers
from transformers.cache_utils import Cache

from hf_ltbm.compat import output_cache

from . import tiny
from .upstream.testers import FAMILIES, FIRST_TEXT_ID, SETTINGS, AudioModelTester

#: The decoding strategies of `GenerationTesterMixin` (sampling draws after `torch.manual_seed(0)` on both models).
MODES: dict[str, dict[str, Any]] = {
    "greedy": {"do_sample": False},
    "sample": {"do_sample": True, "top_k": 5},
    "beam": {"do_sample": False, "num_beams": 2},
    "beam_two_sequences": {"do_sample": False, "num_beams": 2, "num_return_sequences": 2},
}
#: Where the prompt comes from: token ids, or their embeddings with no `input_ids`.
SOURCES = ("input_ids", "inputs_embeds")
#: A fixed number of new tokens (no early end of sequence), so that every output has the same length.
NEW_TOKENS = {"max_new_tokens": 4, "min_new_tokens": 4, "pad_token_id": tiny.PAD_TOKEN_ID}
ALL_OUTPUTS = {
    "return_dict_in_generate": True,
    "output_scores": True,
    "output_logits": True,
    "output_attentions": True,
    "output_hidden_states": True,
}
#: The slower paths run fewer strategies: beam search with two returned sequences covers the beam-only outputs
#: (`beam_indices`, `sequences_scores`) and the cache reordering of beam search with one.
DICT_OUTPUT_MODES = ("greedy", "sample", "beam_two_sequences")
STATIC_CACHE_MODES = ("greedy", "beam_two_sequences")
#: The settings the compiled paths run with (compiling is slow): merging off, and one averaging method.
COMPILED_SETTINGS = ("none", "ltbm")

family_names = pytest.mark.parametrize("family", list(FAMILIES))
setting_names = pytest.mark.parametrize("setting", list(SETTINGS))
mode_names = pytest.mark.parametrize("mode", list(MODES))
source_names = pytest.mark.parametrize("source", SOURCES)


def _build_models(family: str, setting: str, attention: Optional[str] = None) -> tuple[Any, Any]:
    """`(upstream, ours)`: upstream's class built from the config without a setting, the merging class from the config
    with it and upstream's weights; both in eval mode. `attention`: the attention implementation of both (`None`:
    the default)."""
    configs = [AudioModelTester(None, FAMILIES[family], value).get_config() for value in (None, SETTINGS[setting])]
    assert getattr(configs[0], "audio_token_merge", None) is None
    if attention is not None:
        for config in configs:
            config._attn_implementation = attention
    ours_class = FAMILIES[family].classes()[-1]
    torch.manual_seed(0)
    upstream = ours_class._upstream_class(configs[0]).eval()
    ours = ours_class(configs[1]).eval()
    ours.load_state_dict(upstream.state_dict())
    return upstream, ours


#: Models shared by the tests that do not change them (the compiled tests build their own).
_models = functools.cache(_build_models)


@functools.cache
def _inputs(family: str) -> dict[str, torch.Tensor]:
    """The tester's batch of 3 prompts (left padding, audio placeholders, an image for Qwen2.5-Omni's thinker)."""
    _, inputs = AudioModelTester(None, FAMILIES[family], None).prepare_config_and_inputs_for_common()
    return inputs


def _generate(model: Any, family: str, source: str, kwargs: dict[str, Any]) -> Any:
    """`model.generate` on the family's batch, from `input_ids` or from their embeddings (then without
    `input_ids`)."""
    inputs = dict(_inputs(family))
    if source == "inputs_embeds":
        with torch.no_grad():
            inputs["inputs_embeds"] = model.get_input_embeddings()(inputs.pop("input_ids"))
    torch.manual_seed(0)
    return model.generate(**inputs, **NEW_TOKENS, **kwargs)


def _generate_both(upstream: Any, ours: Any, family: str, source: str, **kwargs: Any) -> tuple[Any, Any]:
    """`(upstream's output, ours)` of the same `generate` call; skips when upstream's own class raises."""
    try:
        expected = _generate(upstream, family, source, kwargs)
    except Exception as error:  # upstream's own failure: nothing to compare with
        pytest.skip(f"upstream {type(upstream).__name__} raises on this path: {type(error).__name__}: {error}")
    return expected, _generate(ours, family, source, kwargs)


def _assert_same(actual: Any, expected: Any, where: str = "output") -> None:
    """Exact equality of two generation outputs: tensors (values, shape, dtype), tuples of them, `ModelOutput`s field
    by field (the same fields set) and caches layer by layer."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"{where}: {type(actual).__name__} instead of a tensor"
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=lambda message: f"{where}: {message}")
    elif isinstance(expected, Cache):
        assert type(actual) is type(expected), f"{where}: {type(actual).__name__} != {type(expected).__name__}"
        assert len(actual.layers) == len(expected.layers), f"{where}: layer counts differ"
        for index, (mine, theirs) in enumerate(zip(actual.layers, expected.layers)):
            for name in ("keys", "values"):
                _assert_same(getattr(mine, name, None), getattr(theirs, name, None), f"{where}.layers[{index}].{name}")
    elif isinstance(expected, transformers.utils.ModelOutput):
        assert type(actual) is type(expected), f"{where}: {type(actual).__name__} != {type(expected).__name__}"
        assert list(actual.keys()) == list(expected.keys()), f"{where}: fields {list(actual)} != {list(expected)}"
        for name in expected:
            _assert_same(actual[name], expected[name], f"{where}.{name}")
    elif isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)), f"{where}: {type(actual).__name__} instead of a sequence"
        assert len(actual) == len(expected), f"{where}: length {len(actual)} != {len(expected)}"
        for index, (mine, theirs) in enumerate(zip(actual, expected)):
            _assert_same(mine, theirs, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def _compile_config() -> transformers.CompileConfig:
    """`fullgraph=True` (a graph break is an error) and static shapes, forced on every device (generate compiles
    only on accelerators otherwise)."""
    config = transformers.CompileConfig(fullgraph=True, dynamic=False)
    config._compile_all_devices = True
    return config


@source_names
@mode_names
@setting_names
@family_names
def test_generated_sequences_match_upstream(family: str, setting: str, mode: str, source: str) -> None:
    """Greedy, sampling and beam search, from `input_ids` and from `inputs_embeds`: the same tokens as upstream."""
    upstream, ours = _models(family, setting)
    expected, actual = _generate_both(upstream, ours, family, source, **MODES[mode])
    _assert_same(actual, expected, "sequences")


@source_names
@pytest.mark.parametrize("mode", DICT_OUTPUT_MODES)
@setting_names
@family_names
def test_every_generate_output_matches_upstream(family: str, setting: str, mode: str, source: str) -> None:
    """Scores, logits, attentions (eager attention: the others return none), hidden states, beam indices and the
    cache, exactly."""
    upstream, ours = _models(family, setting, "eager")
    expected, actual = _generate_both(upstream, ours, family, source, **MODES[mode], **ALL_OUTPUTS)
    for name in ("scores", "logits", "attentions", "hidden_states"):
        assert expected.get(name) is not None, f"upstream returned no {name}"
    _assert_same(actual, expected)


@source_names
@pytest.mark.parametrize("mode", STATIC_CACHE_MODES)
@setting_names
@family_names
def test_static_cache_generate_matches_upstream(family: str, setting: str, mode: str, source: str) -> None:
    """Generating on a static cache gives upstream's sequences, scores and cache contents."""
    upstream, ours = _models(family, setting)
    kwargs = {"cache_implementation": "static", "return_dict_in_generate": True, "output_scores": True}
    expected, actual = _generate_both(upstream, ours, family, source, **MODES[mode], **kwargs)
    assert isinstance(output_cache(expected), transformers.StaticCache)
    _assert_same(actual, expected)


@pytest.mark.torch_compile_test
@pytest.mark.parametrize("setting", COMPILED_SETTINGS)
@family_names
def test_compiled_generate_matches_upstream(family: str, setting: str) -> None:
    """Decoding through the forward that `generate` compiles with `fullgraph=True` (on a static cache) gives
    upstream's compiled sequences; both models really took the compiled path."""
    upstream, ours = _build_models(family, setting)
    torch.compiler.reset()
    kwargs = {"cache_implementation": "static", "compile_config": _compile_config(), **MODES["greedy"]}
    expected, actual = _generate_both(upstream, ours, family, "input_ids", **kwargs)
    for model in (upstream, ours):
        assert hasattr(model, "_compiled_call"), f"{type(model).__name__} did not decode with the compiled forward"
    _assert_same(actual, expected, "sequences")


@pytest.mark.torch_compile_test
@pytest.mark.parametrize("setting", COMPILED_SETTINGS)
@family_names
def test_compiled_forward_on_text_matches_upstream_and_eager(family: str, setting: str) -> None:
    """`torch.compile(model.forward, fullgraph=True)` on a text-only prompt runs, gives upstream's compiled logits
    exactly and its own eager logits up to float noise."""
    upstream, ours = _build_models(family, setting)
    inputs = _inputs(family)
    input_ids = inputs["input_ids"].clamp(min=FIRST_TEXT_ID)  # the audio and image placeholders become text
    text = {"input_ids": input_ids, "attention_mask": inputs["attention_mask"]}
    torch.compiler.reset()
    with torch.no_grad():
        try:
            expected_compiled = torch.compile(upstream.forward, fullgraph=True)(**text).logits
        except Exception as error:  # upstream's own failure: nothing to compare with
            name = type(upstream).__name__
            pytest.skip(f"upstream {name}'s forward does not compile: {type(error).__name__}: {error}")
        # compiled before any eager call of this model: a first call must trace as it is
        compiled = torch.compile(ours.forward, fullgraph=True)(**text).logits
        expected = upstream(**text).logits
        eager = ours(**text).logits
    _assert_same(compiled, expected_compiled, "compiled logits")
    _assert_same(eager, expected, "eager logits")
    # Compiled and eager are not bit-exact: inductor's fused kernels reorder the float reductions, so upstream's own
    # compiled forward differs from its eager one by ~1e-7 on these models; float32 noise is all that may differ.
    torch.testing.assert_close(compiled, eager)
