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


# --------------------------------------------------------------------------------------------- property-based tests
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from transformers import AutoProcessor  # noqa: E402

from .models import tiny  # noqa: E402
from .models.conftest import AF3  # noqa: E402
from .strategies import merge_settings  # noqa: E402

#: Loads each folder with transformers alone (hf_ltbm never imported) and reports what it got.
_PLAIN_LOAD = r"""
import json, sys
import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoProcessor

report = []
for folder, parts in json.loads(sys.stdin.read()):
    seen = {}
    if "model" in parts:
        seen["config"] = type(AutoConfig.from_pretrained(folder)).__name__
        model, info = AutoModelForSeq2SeqLM.from_pretrained(folder, output_loading_info=True)
        seen["model"] = type(model).__name__
        seen["architectures"] = model.config.architectures
        seen["loading_info"] = {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs"}
        saved = load_file(f"{folder}/model.safetensors")
        state = model.state_dict()
        seen["weights_equal"] = all(torch.equal(state[k], v) for k, v in saved.items() if k in state)
        seen["base"] = type(AutoModel.from_pretrained(folder)).__name__
    if "processor" in parts:
        processor = AutoProcessor.from_pretrained(folder)
        seen["processor"] = type(processor).__name__
        clip = (0.1 * np.sin(np.arange(16000) / 7)).astype(np.float32)
        batch = processor(text=[processor.audio_token], audio=[clip], sampling_rate=16000, return_tensors="pt")
        seen["placeholders"] = int((batch["input_ids"] == processor.audio_token_id).sum())
        if "model" in parts:
            out = model.generate(**batch, max_new_tokens=2, do_sample=False)
            seen["generated"] = list(out.shape)
    report.append(seen)
print(json.dumps(report))
"""

_UPSTREAM = {
    QWEN.name: ("Qwen2AudioConfig", "Qwen2AudioForConditionalGeneration", "Qwen2AudioModel", "Qwen2AudioProcessor"),
    AF3.name: (
        "AudioFlamingo3Config",
        "AudioFlamingo3ForConditionalGeneration",
        "AudioFlamingo3Model",
        "AudioFlamingo3Processor",
    ),
}


def test_every_saved_folder_loads_in_plain_transformers_as_the_upstream_classes():
    """Folders saved by the merging classes (model, processor or both, any setting or none, a setting set after
    loading) load in transformers without hf_ltbm as the upstream classes, with every weight, and run; with hf_ltbm
    they load as the merging classes with the saved setting."""
    folders: list[tuple[str, list[str]]] = []
    expected: list[tuple[str, list[str], int]] = []
    root = Path(tempfile.mkdtemp(prefix="hf_ltbm_saved_"))

    @settings(max_examples=16)
    @given(
        backbone=st.sampled_from([QWEN, AF3]),
        parts=st.sampled_from([["model"], ["processor"], ["model", "processor"]]),
        setting=st.none() | merge_settings(every_field=True),
        set_later=st.booleans(),
    )
    def save(backbone, parts, setting, set_later):
        folder = root / f"{len(folders)}"
        value = setting.to_dict() if setting is not None else None
        if "model" in parts:
            model = backbone.merging(backbone.config(), audio_token_merge=None if set_later else value)
            if set_later:
                model.set_audio_token_merge(value)
            model.save_pretrained(folder)
            assert AutoModelForSeq2SeqLM.from_pretrained(folder).audio_token_merge == setting
        if "processor" in parts:
            merging_cls = hf_ltbm.Qwen2AudioLTBMProcessor if backbone is QWEN else hf_ltbm.AudioFlamingo3LTBMProcessor
            processor = tiny.processor(backbone.name, merging=True, audio_token_merge=value)
            processor.save_pretrained(folder)
            loaded = AutoProcessor.from_pretrained(folder)
            if setting is None:
                assert type(loaded).__name__ == _UPSTREAM[backbone.name][3]
            else:
                assert type(loaded) is merging_cls and loaded.merge_config == setting
        folders.append((str(folder), parts))
        expected.append((backbone.name, parts, 16000 // 640))  # 1 s of a tiny window: 25 encoder tokens

    save()
    result = subprocess.run(
        [sys.executable, "-c", _PLAIN_LOAD], input=json.dumps(folders), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for seen, (name, parts, tokens) in zip(json.loads(result.stdout), expected):
        config, model, base, processor = _UPSTREAM[name]
        if "model" in parts:
            assert (seen["config"], seen["model"], seen["base"]) == (config, model, base)
            assert seen["architectures"] == [model]
            assert not any(seen["loading_info"].values()), seen["loading_info"]
            assert seen["weights_equal"]
        if "processor" in parts:
            assert seen["processor"] == processor
            assert seen["placeholders"] == tokens  # plain transformers emits the unmerged count
        if parts == ["model", "processor"]:
            assert seen["generated"][0] == 1
