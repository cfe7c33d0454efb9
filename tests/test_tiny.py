import importlib.util

import numpy as np
import pytest
import torch

import hf_ltbm
from hf_ltbm.backbones import backbone_for
from hf_ltbm.tiny import (
    DEFAULT_TINY_SPEC,
    TINY_MODELS,
    TinySpec,
    _backbone,
    build_tiny_config,
    build_tiny_model,
    build_tiny_processor,
    save_tiny_model,
)

from .models.tiny import frames_per_token, tone

#: Mel frames per token -> audio tokens of 30 s (25 per second; 12.5 at 4 encoder frames per token) and of 2 s.
TOKENS_PER_30_S = {4: 750, 8: 375}
TOKENS_PER_2_S = {4: 50, 8: 25}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_real_audio_front_end_and_25_tokens_per_second(name):
    """The real front end: 30 s of audio is 750 tokens (25 per second; Voxtral and GLM-ASR: 375, 12.5 per second)."""
    model, processor = build_tiny_model(name, audio_token_merge={"method": "ltbm", "keep_ratio": 0.5})
    backbone = backbone_for(model)
    assert type(model) is backbone.generation_model
    assert not model.training
    inputs = backbone.encode_audio(processor, np.zeros(16000 * 30, dtype=np.float32))
    before, after = model.audio_token_counts(model._unit_mask(inputs))
    n = TOKENS_PER_30_S[frames_per_token(backbone.model_type)]
    assert int(before.sum()) == n and int(after.sum()) == hf_ltbm.output_length(n, keep_ratio=0.5)
    assert int((inputs["input_ids"] == model.config.audio_token_id).sum()) == int(after.sum())


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, _ = build_tiny_model(seed=1)
    assert torch.equal(torch.rand(3), expected)
    b, _ = build_tiny_model(seed=1)
    c, _ = build_tiny_model(seed=2)
    pa, pb, pc = (next(m.language_model.parameters()) for m in (a.model, b.model, c.model))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_unknown_name():
    with pytest.raises(ValueError, match="Unknown tiny model 'tiny'; choose one of"):
        build_tiny_model("tiny")


# ------------------------------------------------------------------------------------------------ sizes (TinySpec)
TWO_SECONDS = TinySpec(window_seconds=2)


@pytest.mark.parametrize("name", [n for n in TINY_MODELS if not _backbone(n).chat_only])
def test_a_2_s_window_tiny_model_has_50_audio_tokens_per_window(name):
    """`window_seconds=2`: 200 mel frames and 100 encoder positions per window, 50 audio tokens (GLM-ASR: 25); a 2 s
    clip is one whole window, merged to `output_length(50)`."""
    setting = {"method": "ltbm", "keep_ratio": 0.5}
    model, processor = build_tiny_model(name, audio_token_merge=setting, spec=TWO_SECONDS)
    assert processor.feature_extractor.chunk_length == 2
    audio = model.config.audio_config
    glmasr = name == "tiny-random-glmasr"  # rotary positions (`max_position_embeddings`), 4 frames per token
    assert (audio.max_position_embeddings if glmasr else audio.max_source_positions) == 100
    backbone = backbone_for(model)
    inputs = backbone.encode_audio(processor, tone(2.0))
    assert inputs["input_features"].shape[-1] == 200
    before, after = model.audio_token_counts(model._unit_mask(inputs))
    n = TOKENS_PER_2_S[frames_per_token(backbone.model_type)]
    assert before.tolist() == [n] and after.tolist() == [hf_ltbm.output_length(n, keep_ratio=0.5)]
    assert int((inputs["input_ids"] == model.config.audio_token_id).sum()) == int(after.sum())
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 2


def test_a_2_s_voxtral_chunk_has_25_audio_tokens():
    """Voxtral's config takes any even window (12.5 tokens per second): a 2 s chunk is 25 tokens."""
    pytest.importorskip("mistral_common", reason="Voxtral's tokenizer needs mistral-common")
    config = build_tiny_config("tiny-random-voxtral", spec=TWO_SECONDS)
    assert config.audio_config.max_source_positions == 100
    model = _backbone("tiny-random-voxtral").generation_model(config, audio_token_merge="ltbm").eval()
    with torch.no_grad():
        audio = model.get_audio_features(torch.randn(3, 128, 200, generator=torch.Generator().manual_seed(0)))
    assert audio.num_input_tokens.tolist() == [25, 25, 25]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_the_spec_sets_the_sizes_and_the_default_spec_is_the_default_model(name):
    if _backbone(name).chat_only:
        pytest.importorskip("mistral_common", reason="Voxtral's tokenizer needs mistral-common")
    spec = TinySpec(
        mel_bins=80,
        hidden_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=1,
        max_position_embeddings=1024,
        audio_hidden_size=24,
        audio_attention_heads=2,
        audio_layers=3,
    )
    config = build_tiny_config(name, spec=spec)
    text, audio = config.get_text_config(), config.audio_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (48, 96, 1)
    assert (text.num_attention_heads, text.num_key_value_heads, text.max_position_embeddings) == (4, 2, 1024)
    assert audio.num_mel_bins == 80
    widths = {key: getattr(audio, key, None) for key in ("d_model", "hidden_size")}
    assert 24 in widths.values()
    layers = {key: getattr(audio, key, None) for key in ("encoder_layers", "num_hidden_layers")}
    assert 3 in layers.values()
    assert DEFAULT_TINY_SPEC == TinySpec()
    a, pa = build_tiny_model(name)
    b, pb = build_tiny_model(name, spec=TinySpec())
    assert a.config.to_dict() == b.config.to_dict()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert pa.tokenizer.get_vocab() == pb.tokenizer.get_vocab()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_seconds": 0}, r"TinySpec: `window_seconds` must be a positive int, got 0\."),
        ({"mel_bins": 80.0}, r"`mel_bins` must be a positive int, got 80\.0\."),
        ({"num_hidden_layers": True}, r"`num_hidden_layers` must be a positive int, got True\."),
        ({"hidden_size": 30, "num_attention_heads": 4}, r"`hidden_size` \(30\) must be a multiple of `num_attention_"),
        ({"num_key_value_heads": 3, "num_attention_heads": 4}, r"`num_attention_heads` \(4\) must be a multiple of"),
        ({"audio_hidden_size": 10}, r"`audio_hidden_size` \(10\) must be a multiple of `audio_attention_heads` \(4\)"),
        ({"hidden_size": 6, "num_attention_heads": 2}, r"must be an even head size .*got 6 / 2 = 3\."),
    ],
)
def test_bad_sizes_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TinySpec(**kwargs)


def test_what_a_family_cannot_take_is_refused_by_name():
    with pytest.raises(TypeError, match=r"`spec` must be a TinySpec or None, got dict"):
        build_tiny_model(spec={"window_seconds": 2})
    with pytest.raises(ValueError, match=r"`audio_token_merge` must be None for the upstream processor"):
        build_tiny_processor("tiny-random-audioflamingo3", "ltbm", upstream=True)
    with pytest.raises(ValueError, match=r"Qwen2\.5-Omni's tiny model needs a head size .* at least 6 .*got 4\."):
        build_tiny_config("tiny-random-qwen2-5-omni", spec=TinySpec(hidden_size=8))
    pytest.importorskip("mistral_common", reason="Voxtral's tokenizer needs mistral-common")
    with pytest.raises(ValueError, match=r"Voxtral's tiny model needs an even `window_seconds` .*got 3\."):
        build_tiny_config("tiny-random-voxtral", spec=TinySpec(window_seconds=3))
    with pytest.raises(ValueError, match=r"Voxtral's tiny processor takes only `window_seconds=30` .*got 2;"):
        build_tiny_model("tiny-random-voxtral", spec=TWO_SECONDS)


@pytest.mark.parametrize(
    "name", ["tiny-random-qwen2-audio", "tiny-random-audioflamingo3", "tiny-random-musicflamingo"]
)
def test_the_upstream_processor_has_the_same_parts(name):
    stock = build_tiny_processor(name, upstream=True, spec=TWO_SECONDS)
    merging = build_tiny_processor(name, spec=TWO_SECONDS)
    assert type(stock) is _backbone(name).upstream_processor and type(merging) is _backbone(name).processor
    assert stock.tokenizer.get_vocab() == merging.tokenizer.get_vocab()
    assert stock.feature_extractor.to_dict() == merging.feature_extractor.to_dict()
    if name != "tiny-random-qwen2-audio":
        assert build_tiny_processor(name, max_audio_len=6, spec=TWO_SECONDS).max_audio_len == 6


# --------------------------------------------------------------------------------------------- saved checkpoints
#: Loads each folder with transformers alone (hf_ltbm never imported): the config's class, the upstream model class
#: with its loading report (Qwen2.5-Omni's whole model gives none), and (where asked) the processor's class.
_PLAIN_LOAD = r"""
import json, sys
import transformers
from transformers import AutoConfig, AutoProcessor

report = {}
for folder, model_class, with_processor in json.loads(sys.stdin.read()):
    whole = model_class == "Qwen2_5OmniForConditionalGeneration"  # its from_pretrained returns the model alone
    loaded = getattr(transformers, model_class).from_pretrained(folder, output_loading_info=not whole)
    model, info = (loaded, {"missing_keys": [], "unexpected_keys": []}) if whole else loaded
    report[folder] = {
        "config": type(AutoConfig.from_pretrained(folder)).__name__,
        "model": type(model).__name__,
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(info["unexpected_keys"]),
        "processor": type(AutoProcessor.from_pretrained(folder)).__name__ if with_processor else None,
    }
print("RESULT " + json.dumps(report))
"""


def test_saved_tiny_models_load_back_with_plain_transformers_as_the_upstream_classes(tmp_path):
    """`save_tiny_model` writes what plain transformers loads as the upstream classes, with the same weights (Voxtral's
    encoder positions are the sinusoids releases hold; Qwen2.5-Omni's folder is a whole checkpoint, as its releases
    are, holding the thinker); with hf_ltbm imported a saved setting loads the merging classes. Qwen2.5-Omni's
    processor is left out: loading it needs torchvision (its video processor)."""
    import json
    import subprocess
    import sys

    import transformers
    from transformers import AutoModelForSeq2SeqLM, AutoProcessor
    from transformers.models.whisper.modeling_whisper import sinusoids

    # the upstream classes of a whole checkpoint, and the attribute holding the tiny model in it (its weights checked
    # here: upstream's whole model reports no missing keys)
    whole = {"qwen2_5_omni_thinker": ("Qwen2_5OmniConfig", "Qwen2_5OmniForConditionalGeneration", "thinker")}
    names = [n for n in TINY_MODELS if not _backbone(n).chat_only or importlib.util.find_spec("mistral_common")]
    jobs, expected = [], {}
    for name in names:
        backbone = _backbone(name)
        folder = save_tiny_model(name, tmp_path / name, seed=3)
        assert folder == tmp_path / name
        model, _ = build_tiny_model(name, seed=3)
        upstream = backbone.generation_model._upstream_class.__name__
        config_name, upstream, part = whole.get(backbone.model_type, (backbone.config_name, upstream, None))
        loaded = getattr(transformers, upstream).from_pretrained(folder)
        state, loaded = model.state_dict(), (getattr(loaded, part) if part else loaded).state_dict()
        assert state.keys() == loaded.keys()
        differ = [key for key, value in state.items() if not torch.equal(loaded[key], value)]
        assert differ == (["model.audio_tower.embed_positions.weight"] if backbone.chat_only else [])
        if backbone.chat_only:
            positions = loaded["model.audio_tower.embed_positions.weight"]
            assert torch.equal(positions, sinusoids(*positions.shape))
        with_processor = backbone.model_type != "qwen2_5_omni_thinker"
        jobs.append((str(folder), upstream, with_processor))
        processor = backbone.upstream_processor.__name__ if with_processor else None
        expected[str(folder)] = {"config": config_name, "model": upstream, "processor": processor}
    run = subprocess.run([sys.executable, "-c", _PLAIN_LOAD], input=json.dumps(jobs), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    for folder, seen in report.items():
        assert {k: seen[k] for k in ("config", "model", "processor")} == expected[folder], folder
        assert seen["missing"] == [] and seen["unexpected"] == [], folder

    setting = {"method": "ltbm", "keep_ratio": 0.5}
    folder = save_tiny_model("tiny-random-qwen2-audio", tmp_path / "merged", audio_token_merge=setting)
    loaded, processor = AutoModelForSeq2SeqLM.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
    assert (
        type(loaded) is hf_ltbm.Qwen2AudioLTBMForConditionalGeneration and loaded.audio_token_merge.keep_ratio == 0.5
    )
    assert type(processor) is hf_ltbm.Qwen2AudioLTBMProcessor and processor.merge_config.keep_ratio == 0.5


def test_voxtral_is_saved_in_both_formats_without_changing_the_model(tmp_path):
    """Voxtral's folder holds Mistral's format too (`params.json`, `consolidated.safetensors`: what vLLM reads; the
    vLLM tests serve it), with the text attention's rows in Mistral's rotary order; the model handed to `save_tiny`
    keeps its own position embeddings."""
    import json

    pytest.importorskip("mistral_common", reason="Voxtral's tokenizer needs mistral-common")
    from safetensors.torch import load_file

    backbone = _backbone("tiny-random-voxtral")
    model, processor = build_tiny_model("tiny-random-voxtral")
    positions = model.model.audio_tower.embed_positions.weight.clone()
    backbone.save_tiny(model, processor, tmp_path)
    assert torch.equal(model.model.audio_tower.embed_positions.weight, positions)
    params = json.loads((tmp_path / "params.json").read_text())
    text = model.config.text_config
    assert (params["dim"], params["n_heads"], params["n_kv_heads"]) == (64, 2, 1)
    assert params["multimodal"]["whisper_model_args"]["downsample_args"] == {"downsample_factor": 4}
    weights = load_file(tmp_path / "consolidated.safetensors")
    state = model.state_dict()
    assert torch.equal(weights["output.weight"], state["lm_head.weight"])
    assert torch.equal(
        weights["layers.0.attention.wv.weight"], state["model.language_model.layers.0.self_attn.v_proj.weight"]
    )
    wq = state["model.language_model.layers.0.self_attn.q_proj.weight"]
    heads, half = text.num_attention_heads, text.head_dim // 2
    # Mistral interleaves each head's two rotary halves: row 2i is upstream's row i, row 2i + 1 its row half + i
    mistral = weights["layers.0.attention.wq.weight"].view(heads, half, 2, -1)
    assert torch.equal(mistral[:, :, 0], wq.view(heads, 2, half, -1)[:, 0])
    assert torch.equal(mistral[:, :, 1], wq.view(heads, 2, half, -1)[:, 1])
    assert not any("embed_positions" in name for name in weights)
    assert len(weights) == len(state) - 1  # every weight but the position embeddings, which vLLM builds
