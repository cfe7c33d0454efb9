"""How a request's merge setting is resolved, validated and carried to the model (no vLLM needed)."""

from types import SimpleNamespace

import pytest
import torch

from hf_ltbm import AudioTokenMergeConfig
from hf_ltbm.integrations.vllm.settings import FIELD, KEY, decode, decode_items, encode, resolve, servable

from ...strategies import merge_settings


def test_precedence_request_over_engine_over_model_config():
    config = SimpleNamespace(audio_token_merge={"method": "pool", "keep_ratio": 0.5})
    assert resolve({}, config) == AudioTokenMergeConfig(method="pool", keep_ratio=0.5)
    assert resolve({KEY: "global"}, config) == AudioTokenMergeConfig(method="global")
    assert resolve({KEY: None}, config) is None  # turned off for this request
    assert resolve({}, SimpleNamespace()) is None  # a stock checkpoint
    assert FIELD == KEY == "audio_token_merge"


@pytest.mark.parametrize(
    "value, error, message",
    [
        ({"method": "nope"}, ValueError, "Unknown `method` 'nope'; known methods: 'ltbm'"),
        ({"keep_ratio": 2}, ValueError, r"`keep_ratio` must be in \(0, 1\]"),
        ({"method": "pool", "options": {"bogus": 1}}, ValueError, "does not take `bogus`"),
        ({"size_aware_attention": True}, ValueError, "`size_aware_attention=True` cannot be served by vLLM"),
        (3, TypeError, "`audio_token_merge` must be None, a method name"),
    ],
)
def test_what_cannot_be_served_is_refused_by_name(value, error, message):
    with pytest.raises(error, match=message):
        servable(value, "request")
    with pytest.raises(error, match=message):
        resolve({KEY: value}, SimpleNamespace())


def test_settings_round_trip_through_the_tensor_field():
    from hypothesis import given

    @given(merge_settings(every_field=True))
    def check(setting):
        if setting.size_aware_attention:
            return
        row = encode(setting)
        assert row.dtype == torch.uint8 and row.shape == (1024,)
        assert decode(row) == setting

    check()
    assert decode(encode(None)) is None
    rows = torch.stack([encode(None), encode(AudioTokenMergeConfig(method="pool"))])
    assert decode_items(rows, 2) == decode_items(list(rows), 2) == [None, AudioTokenMergeConfig(method="pool")]
    assert decode_items(None, 3) == [None] * 3


def test_the_plugin_is_an_entry_point_and_hf_ltbm_never_imports_vllm():
    import subprocess
    import sys
    from importlib.metadata import entry_points

    (plugin,) = [e for e in entry_points(group="vllm.general_plugins") if e.name == "hf_ltbm"]
    assert plugin.value == "hf_ltbm.integrations.vllm:register"
    code = "import sys, hf_ltbm, hf_ltbm.integrations.vllm.settings; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_served_architecture_is_registered_without_importing_vllm():
    from importlib.util import find_spec

    from hf_ltbm.integrations.vllm import architectures

    ARCHITECTURES = architectures()  # from the backbones' declarations
    assert set(ARCHITECTURES) == {
        "Qwen2AudioForConditionalGeneration",
        "AudioFlamingo3ForConditionalGeneration",
        "VoxtralForConditionalGeneration",
        "Qwen2_5OmniModel",  # Qwen2.5-Omni's thinker, under both names of its releases
        "Qwen2_5OmniForConditionalGeneration",
        "GlmAsrForConditionalGeneration",
    }
    for target in ARCHITECTURES.values():
        module, _, name = target.partition(":")
        assert find_spec(module) is not None and name.endswith("LTBMForConditionalGeneration"), target
