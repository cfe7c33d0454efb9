"""Both backbones: merging off is upstream, the two input paths agree, the KV cache really shrinks."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSeq2SeqLM, DynamicCache

import hf_ltbm
from hf_ltbm.compat import accepted_cache_names, cache_parameter, output_cache

from . import tiny
from .conftest import TEXTS, UNITS
from .tiny import AUDIO_TOKEN_ID, tokens_for_frames

SETTING = {"method": "ltbm", "keep_ratio": 0.5}
GREEDY = {"max_new_tokens": 6, "do_sample": False}
#: Mel frames per token -> the audio tokens of `UNITS`' units (200, 130 and 170 valid mel frames), by hand.
UNIT_TOKENS = {4: [50, 32, 42], 8: [25, 16, 21]}
#: Mel frames per token -> the error for `UNITS`' prompts with one placeholder more than the unmerged count (N + 1),
#: under `SETTING` (M = 62 of 124, or 32 of 62).
COUNT_MISMATCH = {
    4: r"hold 125 .* placeholder tokens.*124 tokens before merging.*62 after",
    8: r"hold 63 .* placeholder tokens.*62 tokens before merging.*32 after",
}


def _generate(model, inputs, **kwargs):
    out = model.generate(**inputs, **GREEDY, **kwargs)
    return out[:, inputs["input_ids"].shape[1] :]


def test_merging_off_is_bit_identical_to_upstream(backbone):
    up, ours = backbone.models()
    inputs = backbone.inputs(UNITS, TEXTS)
    with torch.no_grad():
        assert torch.equal(up(**inputs).logits, ours(**inputs).logits)
        assert torch.equal(up.model(**inputs).last_hidden_state, ours.model(**inputs).last_hidden_state)
    assert torch.equal(up.generate(**inputs, **GREEDY), ours.generate(**inputs, **GREEDY))
    beams = {"num_beams": 2, "num_return_sequences": 2}
    single = backbone.inputs([[170]], [TEXTS[1]])  # one unit per row: upstream expansion is correct here
    assert torch.equal(up.generate(**single, **GREEDY, **beams), ours.generate(**single, **GREEDY, **beams))


@pytest.mark.parametrize("method", ["ltbm", "global", "pool", "prune_norm", "prune_attention", "segment_topk"])
def test_processor_path_and_compaction_path_agree(backbone, method):
    _, ours = backbone.models()
    setting = {"method": method, "keep_ratio": 0.4}
    if hf_ltbm.AudioTokenMergeConfig(**setting).requires_scores and backbone.scores_refused:
        with pytest.raises(ValueError, match=backbone.scores_refused):
            ours.set_audio_token_merge(setting)
        return
    ours.set_audio_token_merge(setting)
    a = backbone.inputs(UNITS, TEXTS, setting)  # path A: M placeholders per unit
    b = backbone.inputs(UNITS, TEXTS)  # path B: N placeholders, compacted in the model
    with torch.no_grad():
        out_a, out_b = ours(**a), ours(**b)
    assert out_a.logits.shape == out_b.logits.shape
    assert torch.equal(out_a.logits, out_b.logits)
    assert torch.equal(out_b.attention_mask, a["attention_mask"])
    assert torch.equal(_generate(ours, a), _generate(ours, b))


def test_beam_search_and_sampling_agree_between_paths(backbone):
    _, ours = backbone.models()
    ours.set_audio_token_merge(SETTING)
    a, b = backbone.inputs(UNITS, TEXTS, SETTING), backbone.inputs(UNITS, TEXTS)
    beams = {"num_beams": 3, "num_return_sequences": 2}
    assert torch.equal(_generate(ours, a, **beams), _generate(ours, b, **beams))
    torch.manual_seed(3)
    sampled_a = ours.generate(**a, max_new_tokens=6, do_sample=True, top_k=0)[:, a["input_ids"].shape[1] :]
    torch.manual_seed(3)
    sampled_b = ours.generate(**b, max_new_tokens=6, do_sample=True, top_k=0)[:, b["input_ids"].shape[1] :]
    assert torch.equal(sampled_a, sampled_b)


def test_static_cache_generation_agrees(backbone):
    _, ours = backbone.models()
    ours.set_audio_token_merge(SETTING)
    a, b = backbone.inputs(UNITS, TEXTS, SETTING), backbone.inputs(UNITS, TEXTS)
    dynamic = _generate(ours, a)
    assert torch.equal(_generate(ours, a, cache_implementation="static"), dynamic)
    assert torch.equal(_generate(ours, b, cache_implementation="static"), dynamic)


def test_equals_feeding_the_language_model_merged_embeddings(backbone):
    up, ours = backbone.models()
    ours.set_audio_token_merge(SETTING)
    a = backbone.inputs(UNITS, TEXTS, SETTING)
    with torch.no_grad():
        audio = backbone.audio_features(ours, a)
        embeds = up.get_input_embeddings()(a["input_ids"])
        mask = (a["input_ids"] == AUDIO_TOKEN_ID)[..., None]
        embeds = embeds.masked_scatter(mask, audio.pooler_output)
    direct = up.generate(inputs_embeds=embeds, attention_mask=a["attention_mask"], **GREEDY)
    assert torch.equal(direct, _generate(ours, backbone.inputs(UNITS, TEXTS)))


def test_kv_cache_holds_text_plus_merged_tokens(backbone):
    _, ours = backbone.models()
    b = backbone.inputs([[200, 130]], [TEXTS[0]])
    n_tokens = int((b["input_ids"] == AUDIO_TOKEN_ID).sum())
    text = b["input_ids"].shape[1] - n_tokens
    with torch.no_grad():
        full = output_cache(ours(**b, use_cache=True)).get_seq_length()
        ours.set_audio_token_merge({"method": "ltbm", "keep_ratio": 0.25})
        merged = output_cache(ours(**b, use_cache=True)).get_seq_length()
    ns = [backbone.tokens(f) for f in (200, 130)]
    m = sum(hf_ltbm.output_length(n, keep_ratio=0.25) for n in ns)
    assert full == text + n_tokens == text + sum(ns)
    assert merged == text + m < full


def test_get_audio_features_reports_counts(backbone):
    _, ours = backbone.models()
    b = backbone.inputs(UNITS, TEXTS)
    ours.set_audio_token_merge(SETTING)
    with torch.no_grad():
        audio = backbone.audio_features(ours, b)
    ns = [backbone.tokens(f) for f in (200, 130, 170)]
    ms = [hf_ltbm.output_length(n, keep_ratio=0.5) for n in ns]
    assert audio.num_input_tokens.tolist() == ns == UNIT_TOKENS[backbone.frames_per_token]
    assert audio.audio_token_counts.tolist() == ms
    assert audio.pooler_output.shape == (sum(ms), ours.config.text_config.hidden_size)
    assert audio.merge_result.sizes.sum(1).tolist() == ns


def test_placeholder_count_matching_neither_is_a_clear_error(backbone):
    _, ours = backbone.models()
    ours.set_audio_token_merge(SETTING)
    b = backbone.inputs(UNITS, TEXTS)
    b["input_ids"] = b["input_ids"].clone()
    b["input_ids"][0, -1] = AUDIO_TOKEN_ID
    with pytest.raises(ValueError, match=COUNT_MISMATCH[backbone.frames_per_token]):
        ours(**b)


def test_compaction_refuses_what_it_cannot_support(backbone):
    _, ours = backbone.models()
    ours.set_audio_token_merge(SETTING)
    b = backbone.inputs(UNITS, TEXTS)
    with pytest.raises(ValueError, match="Assisted decoding cannot be combined with in-model compaction"):
        ours.generate(**b, prompt_lookup_num_tokens=2, **GREEDY)
    with pytest.raises(ValueError, match="Chunked prefill cannot be combined with in-model compaction"):
        ours.generate(**b, prefill_chunk_size=8, **GREEDY)
    first = output_cache(ours.generate(**b, max_new_tokens=2, return_dict_in_generate=True))
    for name in accepted_cache_names(type(ours).forward):  # every name upstream accepts (aliases warn, as upstream)
        deprecated = name != cache_parameter(type(ours).forward)
        with pytest.raises(ValueError, match="Reusing a filled KV cache"):  # refused before generate() renames it
            ours.generate(**b, **{name: first}, **GREEDY)
        with pytest.warns(FutureWarning) if deprecated else nullcontext():
            with pytest.raises(ValueError, match="cannot extend a non-empty KV cache"):
                ours(**b, **{name: first})  # the forward's own guard, for a direct call


@pytest.mark.parametrize("merging", [False, True])
def test_a_user_cache_is_accepted_under_every_name_upstream_accepts(backbone, merging):
    """generate() validates kwargs against `inspect.signature(forward)`: a user-supplied (empty) cache works under
    each name the release accepts, with merging on and off, and gives the result of generating without one."""
    up, ours = backbone.models()
    setting = SETTING if merging else None
    ours.set_audio_token_merge(setting)
    inputs = backbone.inputs(UNITS, TEXTS, setting)
    reference = _generate(up if not merging else ours, inputs)
    for name in accepted_cache_names(type(ours).forward):
        deprecated = name != cache_parameter(type(ours).forward)
        with pytest.warns(FutureWarning) if deprecated else nullcontext():
            out = _generate(ours, inputs, **{name: DynamicCache(config=ours.config.text_config)})
        assert torch.equal(out, reference), name
        with torch.no_grad(), pytest.warns(FutureWarning) if deprecated else nullcontext():
            forward = ours(**inputs, **{name: DynamicCache(config=ours.config.text_config)}, use_cache=True)
        assert output_cache(forward).get_seq_length() == inputs["input_ids"].shape[1]


def test_labels_loss_agrees_between_paths_and_reaches_projector(backbone):
    _, ours = backbone.models()
    ours.set_audio_token_merge(SETTING)
    ours.train()
    losses, grads = [], []
    for inputs in (backbone.inputs(UNITS, TEXTS, SETTING, "right"), backbone.inputs(UNITS, TEXTS, None, "right")):
        labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == AUDIO_TOKEN_ID, -100)
        labels = labels.masked_fill(inputs["attention_mask"] == 0, -100)
        ours.zero_grad()
        loss = ours(**inputs, labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(next(ours.get_submodule(backbone.module(backbone.projector)).parameters()).grad.clone())
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])
    assert float(grads[0].abs().sum()) > 0


def test_auto_classes_and_save_load_round_trip(backbone, tmp_path):
    up, _ = backbone.models()
    up.save_pretrained(tmp_path / "stock")
    autos = [(AutoModelForSeq2SeqLM, backbone.merging), (AutoModelForPreTraining, backbone.merging)]
    if backbone.merging._model_class is not None:  # not Qwen2.5-Omni's flat thinker (5.19)
        autos.append((AutoModel, backbone.merging._model_class))
    for auto, expected in autos:
        model, info = auto.from_pretrained(tmp_path / "stock", audio_token_merge="ltbm", output_loading_info=True)
        assert type(model) is expected
        # exactly what the upstream class reports (the base model has no `lm_head` to load)
        upstream, upstream_info = expected._upstream_class.from_pretrained(
            tmp_path / "stock", output_loading_info=True
        )
        assert info == upstream_info
        if expected is backbone.merging or not upstream_info["missing_keys"]:
            # Loading the base `*Model` from a `*ForConditionalGeneration` folder misses the language model's keys
            # in upstream itself on some releases (5.19 to 5.22); the generation model never may.
            assert not info["missing_keys"]
        assert model.audio_token_merge == hf_ltbm.AudioTokenMergeConfig(method="ltbm")
        upstream_state = upstream.state_dict()
        loaded = {k: v for k, v in model.state_dict().items() if k not in set(info["missing_keys"])}
        assert loaded and all(torch.equal(v, upstream_state[k]) for k, v in loaded.items())
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "stock", audio_token_merge={"keep_ratio": 0.25})
    reference = up.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    model.save_pretrained(tmp_path / "merging")
    from safetensors import safe_open

    def keys(folder):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            return sorted(f.keys())

    # the upstream class's keys, in the released checkpoints' layout (releases 5.19 to 5.22 double the language
    # model's prefix when saving; the merging classes write what the released checkpoints and vLLM use)
    released = sorted(
        k.replace("language_model.model.model.", "language_model.model.") for k in keys(tmp_path / "stock")
    )
    assert keys(tmp_path / "merging") == released
    import json

    saved = json.loads((tmp_path / "merging" / "config.json").read_text())
    assert saved["audio_token_merge"]["keep_ratio"] == 0.25
    assert saved["architectures"] == [backbone.upstream.__name__]
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merging")
    assert reloaded.audio_token_merge.keep_ratio == 0.25
    off = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merging", audio_token_merge=None)
    assert off.audio_token_merge is None
    stock = backbone.upstream.from_pretrained(tmp_path / "merging")
    assert all(torch.equal(v, reference[k]) for k, v in stock.state_dict().items())


@pytest.mark.parametrize(
    "setting", ["ltbm", {"method": "pool", "keep_ratio": 0.3}, hf_ltbm.AudioTokenMergeConfig(method="global")]
)
def test_setting_forms(backbone, setting):
    model = backbone.merging(backbone.config(), audio_token_merge=setting)
    assert model.audio_token_merge == hf_ltbm.AudioTokenMergeConfig.from_value(setting)
    assert isinstance(model.config.audio_token_merge, dict)
    with pytest.raises(ValueError, match="Unknown `method` 'nope'"):
        backbone.merging(backbone.config(), audio_token_merge="nope")


@pytest.mark.parametrize("setting", [None, SETTING])
def test_expansion_for_beams_moves_each_rows_units_together(backbone, setting):
    _, ours = backbone.models()
    ours.set_audio_token_merge(setting)
    inputs = backbone.inputs(UNITS, TEXTS, setting)
    tagged = inputs["input_features"].clone()
    for unit in range(tagged.shape[0]):
        tagged[unit] = unit
    kwargs = {
        "input_features": tagged,
        backbone.mask_name: inputs[backbone.mask_name],
        "attention_mask": inputs["attention_mask"],
    }
    ids, expanded = ours._expand_inputs_for_generation(expand_size=2, input_ids=inputs["input_ids"], **kwargs)
    assert expanded["input_features"][:, 0, 0].tolist() == [0, 1, 0, 1, 2, 2]
    assert torch.equal(expanded[backbone.mask_name], inputs[backbone.mask_name][[0, 1, 0, 1, 2, 2]])
    assert torch.equal(ids, inputs["input_ids"].repeat_interleave(2, dim=0))


def test_setting_the_encoder_cannot_serve_is_refused_and_leaves_the_old_one(backbone):
    _, ours = backbone.models()
    ours.set_audio_token_merge("ltbm")
    ours._merge_model.audio_tower.layers[-1].self_attn = torch.nn.Identity()
    scores = backbone.scores_refused or r"reads attention scores from the last self-attention layer"
    with pytest.raises(ValueError, match=scores):
        ours.set_audio_token_merge({"method": "prune_attention"})
    with pytest.raises(ValueError, match=r"reads keys from the last self-attention layer"):
        ours.set_audio_token_merge({"key_source": "encoder_keys"})
    assert ours.audio_token_merge == hf_ltbm.AudioTokenMergeConfig(method="ltbm")
    ours.set_audio_token_merge({"method": "pool"})  # needs nothing from the encoder's internals


def test_encoder_keys_and_attention_scores_paths_run(backbone):
    _, ours = backbone.models()
    for setting in ({"key_source": "encoder_keys"}, {"method": "prune_attention"}, {"space": "projector"}):
        if setting.get("method") == "prune_attention" and backbone.scores_refused:
            with pytest.raises(ValueError, match=backbone.scores_refused):
                ours.set_audio_token_merge(setting)
            continue
        ours.set_audio_token_merge(setting)
        a, b = backbone.inputs(UNITS, TEXTS, setting), backbone.inputs(UNITS, TEXTS)
        with torch.no_grad():
            assert torch.equal(ours(**a).logits, ours(**b).logits)


@pytest.mark.parametrize("method", ["ltbm", "pool", "prune_attention"])
def test_a_last_window_without_encoder_tokens_is_left_empty(method):
    """AF3 cuts a clip into windows; a last window of 320 samples or fewer has no encoder token. Merging off handles
    it (0 placeholders); with merging on it reached the merge and crashed."""
    from tests.models.conftest import AF3
    from tests.models.tiny import tone

    processor = tiny.processor("audioflamingo3", merging=True, audio_token_merge=method)
    window = processor.feature_extractor.chunk_length * 16000
    for extra in (1, 160, 320):  # samples past a whole window
        clip = np.concatenate([tone(2.0)[:window], tone(0.1)[:extra]])
        batch = processor(text=["<sound> describe"], audio=[clip])
        n_per_window = tokens_for_frames_list(batch["input_features_mask"].sum(-1))
        assert n_per_window[-1] == 0
        _, model = AF3.models()
        model.set_audio_token_merge(method)
        num_input, num_output = model.audio_token_counts(batch["input_features_mask"])
        assert num_output.tolist()[-1] == 0
        assert int((batch["input_ids"] == AUDIO_TOKEN_ID).sum()) == int(num_output.sum())
        with torch.no_grad():
            features = model.get_audio_features(batch["input_features"], batch["input_features_mask"])
        assert features.audio_token_counts.tolist() == num_output.tolist()
        assert model.generate(**batch, max_new_tokens=2, do_sample=False).shape[1] == batch["input_ids"].shape[1] + 2
    # in a batch, the empty window stays with its clip's row (beam search moves each row's windows as a block)
    rows = [clip, tone(1.0, 660)]
    beams = {"max_new_tokens": 3, "do_sample": False, "num_beams": 2, "num_return_sequences": 2}
    together = processor(text=["<sound> describe"] * 2, audio=rows, padding=True, padding_side="left")
    out = model.generate(**together, **beams)[:, together["input_ids"].shape[1] :]
    for i, audio in enumerate(rows):
        alone = processor(text=["<sound> describe"], audio=[audio])
        assert torch.equal(out[2 * i : 2 * i + 2], model.generate(**alone, **beams)[:, alone["input_ids"].shape[1] :])


def tokens_for_frames_list(frames):
    return [max(0, tokens_for_frames(int(f))) for f in frames]


def _break(name, frames_per_token):
    """Edits model inputs into ones that cannot be served; each case names the tensor and shapes in its error."""

    def drop_placeholder(b, mask_name):
        b["input_ids"] = b["input_ids"].clone()
        b["input_ids"][0, -1] = AUDIO_TOKEN_ID  # one placeholder more than either count

    def extra_unit(b, mask_name):
        b["input_features"] = torch.cat([b["input_features"], b["input_features"][:1]])

    def mel_bins(b, mask_name):
        b["input_features"] = b["input_features"][:, :-8]

    def frames(b, mask_name):
        b["input_features"] = b["input_features"][..., :-10]
        b[mask_name] = b[mask_name][..., :-10]

    def no_mask(b, mask_name):
        b.pop(mask_name)

    return {
        "placeholders": (drop_placeholder, COUNT_MISMATCH[frames_per_token]),
        "extra_unit": (extra_unit, r"must have shape \[units, frames\] = \[4, 200\] .*got \(3, 200\)"),
        "mel_bins": (mel_bins, r"`input_features` must have shape \[units, num_mel_bins, frames\] = \[U, \d+, 200\]"),
        "frames": (frames, r"`input_features` must have shape .*got \(3, \d+, 190\)"),
        "no_mask": (no_mask, r"is required with `input_features`"),
    }[name]


@pytest.mark.parametrize("case", ["placeholders", "extra_unit", "mel_bins", "frames", "no_mask"])
@pytest.mark.parametrize("call", ["forward", "generate"])
def test_inputs_that_cannot_be_served_are_refused_before_any_weights_run(backbone, case, call):
    """Each error names the input and what is allowed, and comes before the encoder, the projector or the language
    model runs (the placeholder count and the feature shapes are checked from the masks alone)."""
    _, ours = backbone.models()
    ours.set_audio_token_merge(SETTING)
    inputs = backbone.inputs(UNITS, TEXTS)
    edit, message = _break(case, backbone.frames_per_token)
    if case == "frames" and backbone.name == "qwen2_5_omni_thinker":
        # features of any padded length are the thinker's; shorter valid audio changes the placeholder count
        message = r"hold 124 .* placeholder tokens.*121 tokens before merging"
    edit(inputs, backbone.mask_name)
    ran = []
    hooks = [m.register_forward_pre_hook(lambda m, a: ran.append(type(m).__name__)) for m in ours.modules()]
    try:
        with pytest.raises(ValueError, match=message):
            ours(**inputs) if call == "forward" else ours.generate(**inputs, max_new_tokens=2)
    finally:
        for hook in hooks:
            hook.remove()
    assert ran in ([], [type(ours).__name__]), ran  # at most the top-level forward was entered


def test_from_pretrained_with_a_setting_object_while_transformers_logs_at_info(backbone, tmp_path):
    """An `AudioTokenMergeConfig` passed to `from_pretrained` ended up as an attribute of the model config, which
    transformers' INFO log line (`Model config ...`, as lmms-eval turns on) could not serialise: loading failed."""
    from transformers.utils import logging as hf_logging

    up, _ = backbone.models()
    up.config.audio_token_merge = None  # a folder saved by hf-ltbm with merging off holds the key
    up.save_pretrained(tmp_path)
    setting = hf_ltbm.AudioTokenMergeConfig(method="pool", keep_ratio=0.25)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, audio_token_merge=setting)
    finally:
        hf_logging.set_verbosity(verbosity)
    assert model.audio_token_merge == setting and isinstance(model.config.audio_token_merge, dict)
    with pytest.raises(ValueError, match=r"`keep_ratio` must be in \(0, 1\]"):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path, audio_token_merge={"keep_ratio": 5})


@pytest.mark.parametrize("space", ["encoder", "projector"])
def test_norm_preserving_merging_passes_the_shared_checks(backbone, space, tmp_path):
    """With `preserve_norm`, in either space: both prompt paths agree (forward, greedy and beam search on a batch),
    the static cache agrees, the setting survives save/load, and the language model gets other audio embeddings than
    with plain averaging (of the same counts)."""
    setting = {"method": "ltbm", "keep_ratio": 0.5, "space": space, "preserve_norm": True}
    _, ours = backbone.models()
    ours.set_audio_token_merge(setting)
    a, b = backbone.inputs(UNITS, TEXTS, setting), backbone.inputs(UNITS, TEXTS)
    with torch.no_grad():
        assert torch.equal(ours(**a).logits, ours(**b).logits)
    greedy = _generate(ours, a)
    assert torch.equal(greedy, _generate(ours, b))
    assert torch.equal(_generate(ours, a, cache_implementation="static"), greedy)
    beams = {"num_beams": 2, "num_return_sequences": 2}
    assert torch.equal(_generate(ours, a, **beams), _generate(ours, b, **beams))
    with torch.no_grad():
        kept = backbone.audio_features(ours, a)
        ours.set_audio_token_merge({**setting, "preserve_norm": False})
        plain = backbone.audio_features(ours, a)
    assert torch.equal(kept.audio_token_counts, plain.audio_token_counts)
    assert not torch.equal(kept.pooler_output, plain.pooler_output)
    ours.set_audio_token_merge(setting)
    ours.save_pretrained(tmp_path)
    loaded = type(ours).from_pretrained(tmp_path)
    assert loaded.audio_token_merge == hf_ltbm.AudioTokenMergeConfig.from_value(setting)
    assert loaded.config.audio_token_merge["preserve_norm"] is True
