"""`import hf_ltbm` is cheap: no torch, no transformers, no backbone's model code until a backbone is used; the Auto
classes get the merging classes whichever of transformers and hf_ltbm is imported first; the vLLM plugin's entry
point imports only the backbones' declarations. Each check runs in a fresh interpreter."""

import json
import subprocess
import sys
import textwrap

import pytest

#: What a fresh interpreter has imported, as JSON: torch, transformers, and the model code of the families.
_REPORT = """
import json, sys
families = ("qwen2_audio", "audioflamingo3", "musicflamingo", "voxtral", "qwen2_5_omni")
print(json.dumps({
    "torch": "torch" in sys.modules,
    "transformers": "transformers" in sys.modules,
    "upstream_modeling": sorted(f for f in families if f"transformers.models.{f}.modeling_{f}" in sys.modules),
    "merging_classes": sorted(  # the families whose merging classes have been made
        model_type for model_type, backbone in getattr(sys.modules.get("hf_ltbm.backbones"), "BACKBONES", {}).items()
        if "classes" in vars(backbone)
    ),
}))
"""


def _run(code: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + _REPORT], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_hf_ltbm_imports_neither_torch_nor_transformers():
    report = _run("import hf_ltbm\nimport hf_ltbm.backbones\nhf_ltbm.backbones.BACKBONES['qwen2_audio'].tiny_name\n")
    assert report == {"torch": False, "transformers": False, "upstream_modeling": [], "merging_classes": []}


@pytest.mark.parametrize("first", ["hf_ltbm", "transformers"])
def test_the_auto_classes_make_only_the_backbone_asked_for(first):
    imports = ["import hf_ltbm", "from transformers import AutoModelForSeq2SeqLM, AutoProcessor, Qwen2AudioConfig"]
    code = "\n".join(imports if first == "hf_ltbm" else imports[::-1]) + "\n"
    report = _run(code)
    assert report["upstream_modeling"] == [] and report["merging_classes"] == []
    report = _run(
        code
        + "cls = AutoModelForSeq2SeqLM._model_mapping[Qwen2AudioConfig]\n"
        + "assert cls is hf_ltbm.Qwen2AudioLTBMForConditionalGeneration, cls\n"
    )
    assert report["upstream_modeling"] == ["qwen2_audio"]
    assert report["merging_classes"] == ["qwen2_audio"]


def test_the_auto_classes_are_registered_when_a_config_is_imported_first():
    """On some releases a config's docstring decorator imports transformers' Auto modules while the config module is
    still half-imported: the registration must not look configs up then (transformers would drop the half-done Auto
    module and import a fresh one without hf-ltbm's classes)."""
    report = _run(
        """
        import hf_ltbm
        from transformers import AudioFlamingo3Config
        from transformers import AutoModelForSeq2SeqLM, AutoProcessor
        cls = AutoModelForSeq2SeqLM._model_mapping[AudioFlamingo3Config]
        assert cls is hf_ltbm.AudioFlamingo3LTBMForConditionalGeneration, cls
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
        assert PROCESSOR_MAPPING[AudioFlamingo3Config] is hf_ltbm.AudioFlamingo3LTBMProcessor
        """
    )
    assert report["merging_classes"] == ["audioflamingo3"]


def test_the_vllm_entry_point_imports_only_the_declarations():
    """A stand-in `vllm` records the registrations: the plugin registers every served architecture by name."""
    report = _run(
        """
        import sys, types
        registered = {}
        vllm = types.ModuleType("vllm")
        record = lambda arch, target: registered.update({arch: target})  # noqa: E731
        vllm.ModelRegistry = types.SimpleNamespace(register_model=record)
        sys.modules["vllm"] = vllm
        from hf_ltbm.integrations.vllm import register
        register()
        assert registered["Qwen2AudioForConditionalGeneration"] == (
            "hf_ltbm.integrations.vllm.qwen2_audio:Qwen2AudioLTBMForConditionalGeneration"
        ), registered
        assert len(registered) == 6, registered
        """
    )
    assert report == {"torch": False, "transformers": False, "upstream_modeling": [], "merging_classes": []}


def test_the_lmms_eval_models_are_made_per_backbone_from_the_registry():
    from hf_ltbm.backbones import BACKBONES
    from hf_ltbm.integrations.lmms_eval import MODELS

    assert list(MODELS) == [backbone.lmms_eval_id for backbone in BACKBONES.values()]
    assert MODELS["hf_ltbm_qwen2_audio"] == "hf_ltbm.integrations.lmms_eval.model.Qwen2AudioLTBM"
