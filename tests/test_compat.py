"""hf_ltbm.compat: the one place that binds to transformers internals, by feature detection."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import tomllib
import torch
import transformers
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from transformers import GenerationConfig
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_ltbm import compat
from hf_ltbm.backbones import BACKBONES, get_backbone

ROOT = Path(__file__).resolve().parents[1]


def test_the_supported_range_is_the_package_requirement():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirement = next(r for r in pyproject["project"]["dependencies"] if r.startswith("transformers"))
    assert Requirement(requirement).specifier == SpecifierSet(compat.SUPPORTED_TRANSFORMERS)
    assert Requirement(requirement).specifier == SpecifierSet(compat._DEVELOPMENT_RANGE)
    assert compat.SUPPORTED_TRANSFORMERS.startswith(">=")


def test_the_installed_release_has_every_hook():
    every_backbone = [hook for backbone in BACKBONES.values() for hook in backbone.required_hooks]
    assert compat.missing_hooks(every_backbone) == []
    compat.check_requirements(every_backbone)


def test_a_release_without_a_hook_gets_a_clear_import_error(monkeypatch):
    monkeypatch.delattr(transformers.Qwen2AudioProcessor, "replace_audio_token")
    with pytest.raises(ImportError) as error:
        compat.check_requirements(get_backbone("qwen2_audio").required_hooks)
    message = str(error.value)
    assert f"installed transformers {transformers.__version__}" in message
    assert f"transformers{compat.SUPPORTED_TRANSFORMERS}" in message
    assert "transformers.Qwen2AudioProcessor.replace_audio_token" in message


def test_a_backbone_fails_clearly_before_binding_to_a_missing_hook():
    """`import hf_ltbm` is lazy: a family's hooks are checked when its classes are first made, so a release that lacks
    one family's hook still serves the others."""
    code = (
        "import transformers\ndel transformers.AudioFlamingo3Processor.replace_audio_token\nimport hf_ltbm\n"
        "print(hf_ltbm.Qwen2AudioLTBMProcessor.__name__)\nhf_ltbm.AudioFlamingo3LTBMProcessor\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and result.stdout.strip() == "Qwen2AudioLTBMProcessor"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: hf-ltbm supports transformers"), result.stderr
    assert "lacks transformers.AudioFlamingo3Processor.replace_audio_token" in last
    assert transformers.__version__ in last


def test_cache_field_and_output_cache_round_trip_without_deprecation_notices(caplog):
    marker = object()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = CausalLMOutputWithPast(logits=torch.zeros(1), **compat.cache_field(marker))
        assert compat.output_cache(output) is marker
        assert compat.output_cache(dict(output)) is marker
        assert compat.output_cache(CausalLMOutputWithPast(logits=torch.zeros(1))) is None
    assert compat.OUTPUT_CACHE_FIELD in {"cache", "past_key_values"}


def test_cache_names_follow_the_signature():
    def new(self, cache=None, **kwargs): ...

    def old(self, past_key_values=None, **kwargs): ...

    def none(self, **kwargs): ...

    assert compat.cache_parameter(new) == "cache" and compat.accepted_cache_names(new) == compat.CACHE_NAMES
    assert compat.cache_parameter(old) == "past_key_values"
    assert compat.accepted_cache_names(old) == ("past_key_values",)
    with pytest.raises(TypeError, match="takes no KV cache"):
        compat.cache_parameter(none)
    assert compat.cache_arguments({"cache": None, "past_key_values": 1, "x": 2}) == [1]


def _upstream(self, input_ids=None, cache=None, use_cache=None, new_feature=None, **kwargs): ...


def test_bind_forward_names_every_argument_and_renames_the_deprecated_cache_name():
    handled = frozenset({"input_ids", "use_cache", "cache"})
    self = object()
    bound = compat.bind_forward(_upstream, handled, (self, "ids"), {"use_cache": True, "extra": 3})
    assert bound == {"input_ids": "ids", "use_cache": True, "kv_cache": None, "extra": 3}
    assert compat.bind_forward(_upstream, handled, (self,), {"cache": "c"})["kv_cache"] == "c"
    with pytest.warns(FutureWarning, match="`past_key_values` is deprecated.*use `cache`"):
        bound = compat.bind_forward(_upstream, handled, (self,), {"past_key_values": "c"})
    assert bound["kv_cache"] == "c" and "past_key_values" not in bound
    with pytest.raises(TypeError, match="KV cache twice"):
        compat.bind_forward(_upstream, handled, (self,), {"cache": "a", "past_key_values": "b"})
    with pytest.raises(TypeError):
        compat.bind_forward(_upstream, handled, (self, 1, 2, 3, 4, 5), {})


def test_bind_forward_refuses_a_value_for_an_upstream_parameter_it_does_not_implement():
    handled = frozenset({"input_ids", "use_cache", "cache"})
    compat.bind_forward(_upstream, handled, (object(),), {"new_feature": None})  # the default: nothing to do
    with pytest.raises(TypeError, match=re.escape("takes ['new_feature'], which the merging path")):
        compat.bind_forward(_upstream, handled, (object(),), {"new_feature": 1})


def test_mirrors_gives_the_upstream_signature():
    @compat.mirrors(_upstream)
    def forward(self, *args, **kwargs):
        return args, kwargs

    import inspect

    assert inspect.signature(forward) == inspect.signature(_upstream)
    assert forward(None, 1, cache=2) == ((1,), {"cache": 2})


@pytest.mark.parametrize("keep", [0, 1, 3, torch.tensor([0, 2])])
def test_slice_logits_to_keep_and_its_fallback_agree(keep):
    hidden = torch.arange(24.0).reshape(1, 4, 6)
    expected = hidden[:, -keep:] if isinstance(keep, int) else hidden[:, keep]
    assert torch.equal(compat._slice_logits_to_keep(hidden, keep), expected)
    assert torch.equal(compat.slice_logits_to_keep(hidden, keep), expected)


class _OldPipeline:
    generation_config = GenerationConfig(max_new_tokens=256, num_beams=1)


class _NewPipeline:
    def _prepare_generate_kwargs(self, kwargs):
        kwargs["added"] = True
        return kwargs


def test_pipeline_generate_kwargs_on_either_kind_of_release():
    given = {"max_new_tokens": 3, "streamer": "s"}
    old = compat.prepare_pipeline_generate_kwargs(_OldPipeline(), given)
    assert set(old) == {"streamer", "generation_config"} and old["streamer"] == "s"
    assert old["generation_config"].max_new_tokens == 3 and old["generation_config"].num_beams == 1
    assert _OldPipeline.generation_config.max_new_tokens == 256  # a copy was updated
    mine = GenerationConfig(max_new_tokens=5, do_sample=False)
    with_config = compat.prepare_pipeline_generate_kwargs(_OldPipeline(), {"generation_config": mine, "num_beams": 2})
    assert with_config["generation_config"].max_new_tokens == 5 and with_config["generation_config"].num_beams == 2
    assert mine.num_beams != 2  # the caller's config is not modified
    assert compat.prepare_pipeline_generate_kwargs(_NewPipeline(), given) == {**given, "added": True}
    assert given == {"max_new_tokens": 3, "streamer": "s"}  # never modified


def test_saved_folders_hold_the_released_checkpoint_keys_on_every_release(tmp_path):
    """Released Qwen2-Audio / AF3 checkpoints (and vLLM's loader) use `language_model.model.*`; transformers 5.19 to
    5.22 save the merging classes' language model under `language_model.model.model.*`. The saved folder holds the
    released layout on this release, sharded too, and a folder written with the doubled prefix is repaired."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from hf_ltbm.compat import repair_saved_language_model_keys
    from hf_ltbm.tiny import build_tiny_model

    model, _ = build_tiny_model()
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    keys = set(index["weight_map"])
    for path in (tmp_path / "sharded").glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            assert set(handle.keys()) <= keys
    assert "language_model.lm_head.weight" in keys
    assert {k.split(".")[2] for k in keys if k.startswith("language_model.model.")} == {
        "embed_tokens",
        "layers",
        "norm",
    }
    # a folder with the doubled prefix, as those releases write it
    model.save_pretrained(tmp_path / "doubled")
    path = tmp_path / "doubled" / "model.safetensors"
    tensors = load_file(str(path))
    doubled = {k.replace("language_model.model.", "language_model.model.model.", 1): v for k, v in tensors.items()}
    save_file(doubled, str(path), metadata={"format": "pt"})
    assert repair_saved_language_model_keys(tmp_path / "doubled") == sum(k != d for k, d in zip(tensors, doubled))
    assert load_file(str(path)).keys() == tensors.keys()
    assert repair_saved_language_model_keys(tmp_path / "doubled") == 0
