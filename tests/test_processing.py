import functools
import json

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

import hf_ltbm
from hf_ltbm import AudioFlamingo3LTBMProcessor, MusicFlamingoLTBMProcessor, Qwen2AudioLTBMProcessor

from .models import tiny
from .models.conftest import AF3, MUSICFLAMINGO, QWEN
from .models.tiny import AUDIO_TOKEN_ID, tokens_for_frames, tone

QWEN_PROMPT = "<|audio_bos|><|AUDIO|><|audio_eos|> what is in the audio ?"
AF3_PROMPT = "<sound> describe the sound"


def _placeholders(batch):
    return (batch["input_ids"] == AUDIO_TOKEN_ID).sum(1).tolist()


def test_qwen2_audio_processor_emits_merged_count():
    audio = [tone(1.3), tone(2.0, 880)]
    stock = tiny.processor("qwen2_audio")(text=[QWEN_PROMPT] * 2, audio=audio, return_tensors="pt", padding=True)
    ours = tiny.processor("qwen2_audio", merging=True, audio_token_merge={"keep_ratio": 0.3})
    merged = ours(text=[QWEN_PROMPT] * 2, audio=audio, return_tensors="pt", padding=True)
    ns = [tokens_for_frames(int(f)) for f in stock["feature_attention_mask"].sum(-1)]
    assert _placeholders(stock) == ns
    assert _placeholders(merged) == [hf_ltbm.output_length(n, keep_ratio=0.3) for n in ns]
    assert torch.equal(stock["input_features"], merged["input_features"])


def test_merging_off_processor_equals_upstream():
    audio = [tone(1.3)]
    stock = tiny.processor("qwen2_audio")(text=[QWEN_PROMPT], audio=audio, return_tensors="pt")
    off = tiny.processor("qwen2_audio", merging=True)(text=[QWEN_PROMPT], audio=audio, return_tensors="pt")
    assert all(torch.equal(stock[k], off[k]) for k in stock)


def test_audioflamingo3_processor_counts_per_window():
    audio = [tone(5.0), tone(1.5, 300)]  # 3 windows (2 s, 2 s, 1 s) and 1 window
    setting = {"method": "pool", "keep_ratio": 0.25}
    stock = tiny.processor("audioflamingo3")(text=[AF3_PROMPT] * 2, audio=audio)
    merged = tiny.processor("audioflamingo3", merging=True, audio_token_merge=setting)(
        text=[AF3_PROMPT] * 2, audio=audio
    )
    per_window = [tokens_for_frames(int(f)) for f in merged["input_features_mask"].sum(-1)]
    assert len(per_window) == 4
    m = [hf_ltbm.output_length(n, keep_ratio=0.25) for n in per_window]
    assert _placeholders(merged) == [sum(m[:3]), m[3]]
    assert _placeholders(stock) == [sum(per_window[:3]), per_window[3]]


# backbone -> (processor factory: the stock one, or with `merging=True` the merging one; merging class, prompt)
_PROCESSORS = {
    "qwen2_audio": (functools.partial(tiny.processor, "qwen2_audio"), Qwen2AudioLTBMProcessor, QWEN_PROMPT),
    "audioflamingo3": (
        functools.partial(tiny.processor, "audioflamingo3"),
        AudioFlamingo3LTBMProcessor,
        AF3_PROMPT,
    ),
    "musicflamingo": (functools.partial(tiny.processor, "musicflamingo"), MusicFlamingoLTBMProcessor, AF3_PROMPT),
}


@pytest.mark.parametrize("backbone", [QWEN, AF3, MUSICFLAMINGO], ids=lambda b: b.name)
def test_processor_outputs_run_both_paths_identically(backbone):
    make, merging_cls, prompt = _PROCESSORS[backbone.name]
    setting = {"keep_ratio": 0.5}
    audio = [tone(1.7), tone(0.9 if backbone is QWEN else 3.1, 660)]
    kwargs = {"return_tensors": "pt", "padding": True} if backbone is QWEN else {}
    a = make(merging=True, audio_token_merge=setting)(text=[prompt] * 2, audio=audio, **kwargs)
    b = make()(text=[prompt] * 2, audio=audio, **kwargs)
    _, model = backbone.models()
    model.set_audio_token_merge(setting)
    gen = {"max_new_tokens": 5, "do_sample": False}
    out_a = model.generate(**a, **gen)[:, a["input_ids"].shape[1] :]
    out_b = model.generate(**b, **gen)[:, b["input_ids"].shape[1] :]
    assert torch.equal(out_a, out_b)


def test_too_long_audio_is_an_error_not_a_truncation():
    with pytest.raises(ValueError, match=r"Audio 0 is 2\.5 s long, but Qwen2-Audio accepts at most 2 s"):
        tiny.processor("qwen2_audio", merging=True)(text=[QWEN_PROMPT], audio=[tone(2.5)])
    with pytest.raises(
        ValueError, match=r"Audio 1 is 7\.0 s long, but Audio Flamingo 3 \(max_audio_len=6: 3 whole 2 s windows\)"
    ):
        tiny.processor("audioflamingo3", merging=True)(text=[AF3_PROMPT] * 2, audio=[tone(1), tone(7)])
    with pytest.raises(
        ValueError, match=r"Audio 1 is 7\.0 s long, but Music Flamingo \(max_audio_len=6: 3 whole 2 s windows\)"
    ):
        tiny.processor("musicflamingo", merging=True)(text=[AF3_PROMPT] * 2, audio=[tone(1), tone(7)])


def test_auto_processor_returns_merging_processor(tmp_path):
    tiny.processor("qwen2_audio").save_pretrained(tmp_path / "stock")
    QWEN.config().save_pretrained(tmp_path / "stock")
    proc = AutoProcessor.from_pretrained(tmp_path / "stock", audio_token_merge="ltbm")
    assert type(proc) is Qwen2AudioLTBMProcessor
    assert proc.merge_config == hf_ltbm.AudioTokenMergeConfig(method="ltbm")
    plain = AutoProcessor.from_pretrained(tmp_path / "stock")
    assert type(plain).__name__ == "Qwen2AudioProcessor"
    proc.save_pretrained(tmp_path / "merging")
    saved = json.loads((tmp_path / "merging" / "processor_config.json").read_text())
    assert saved["audio_token_merge"]["method"] == "ltbm"
    again = AutoProcessor.from_pretrained(tmp_path / "merging")
    assert type(again) is Qwen2AudioLTBMProcessor and again.merge_config == proc.merge_config


@pytest.mark.parametrize("backbone", [QWEN, AF3, MUSICFLAMINGO], ids=lambda b: b.name)
def test_a_saved_merging_processor_names_the_upstream_class(backbone, tmp_path):
    """Plain transformers' AutoProcessor reads `processor_class` (processor_config.json first, then the tokenizer's
    config): a saved merging processor named itself there, so plain transformers loaded the folder as a bare
    tokenizer. It now names the upstream class in both, and with hf_ltbm imported the saved setting still makes
    AutoProcessor return the merging processor."""
    make, merging_cls, _ = _PROCESSORS[backbone.name]
    upstream = merging_cls._upstream_class.__name__
    setting = {"method": "pool", "keep_ratio": 0.25}
    make(merging=True, audio_token_merge=setting).save_pretrained(tmp_path)
    for name in ("processor_config.json", "tokenizer_config.json"):
        assert json.loads((tmp_path / name).read_text())["processor_class"] == upstream, name
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is merging_cls
    assert loaded.audio_token_merge == hf_ltbm.AudioTokenMergeConfig(**setting).to_dict()
    assert AutoProcessor.from_pretrained(tmp_path, audio_token_merge=None).merge_config is None
    # a folder saved without a setting loads as the upstream class, as before
    make(merging=True).save_pretrained(tmp_path / "off")
    assert type(AutoProcessor.from_pretrained(tmp_path / "off")).__name__ == upstream


def test_folders_saved_under_the_merging_class_name_still_load(tmp_path):
    """hf-ltbm 0.1 folders name the merging class; with hf_ltbm imported they load as before."""
    tiny.processor("qwen2_audio", merging=True, audio_token_merge="global").save_pretrained(tmp_path)
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = tmp_path / name
        path.write_text(json.dumps({**json.loads(path.read_text()), "processor_class": "Qwen2AudioLTBMProcessor"}))
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is Qwen2AudioLTBMProcessor and loaded.merge_config.method == "global"


def test_a_max_audio_len_between_windows_counts_windows_as_upstream_does():
    """max_audio_len=5 with 2 s windows: upstream keeps 2 whole windows (4 s). A 4 s and a 1 s clip in one batch get
    each row its own placeholders (before, the merging processor counted 3 windows for a clip upstream cut to 2, so
    row 0 took both clips' placeholders and row 1 none); a clip longer than 4 s is refused, not cut."""
    setting = {"method": "ltbm", "keep_ratio": 0.5}
    merging = tiny.processor("audioflamingo3", merging=True, audio_token_merge=setting, max_audio_len=5)
    stock = tiny.processor("audioflamingo3", max_audio_len=5)
    audio = [tone(4.0), tone(1.0, 300)]
    batch = merging(text=[AF3_PROMPT] * 2, audio=audio)
    per_window = [tokens_for_frames(int(f)) for f in batch["input_features_mask"].sum(-1)]
    m = [hf_ltbm.output_length(n, keep_ratio=0.5) for n in per_window]
    assert hf_ltbm.backbones.units_per_clip(merging, [len(a) for a in audio]) == [2, 1] == [len(m) - 1, 1]
    assert _placeholders(batch) == [m[0] + m[1], m[2]]
    _, model = AF3.models()
    model.set_audio_token_merge(setting)
    generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 3)
    # the stock processor truncates a longer clip to those 2 windows; units_per_clip agrees with its rows
    long_clip = tone(4.6)
    assert stock(text=[AF3_PROMPT], audio=[long_clip])["input_features"].shape[0] == 2
    assert hf_ltbm.backbones.units_per_clip(stock, [len(long_clip)]) == [2]
    assert hf_ltbm.backbones.max_audio_seconds(stock) == 4.0
    with pytest.raises(ValueError, match=r"Audio 0 is 4\.6 s long, but Audio Flamingo 3 \(max_audio_len=5: 2 whole"):
        merging(text=[AF3_PROMPT], audio=[long_clip])
    with pytest.raises(ValueError, match=r"max_audio_len=1 keeps no 2 s window"):
        tiny.processor("audioflamingo3", merging=True, max_audio_len=1)(text=[AF3_PROMPT], audio=[tone(1.0)])


def test_num_tokens_is_a_budget_per_audio_unit_as_documented():
    """Audio Flamingo 3 applies `num_tokens` per window (the docs said per clip): three windows, three budgets."""
    merging = tiny.processor("audioflamingo3", merging=True, audio_token_merge={"num_tokens": 5})
    assert _placeholders(merging(text=[AF3_PROMPT], audio=[tone(6.0)])) == [3 * 5]
    assert "per 30 s window for Audio Flamingo 3" in " ".join(hf_ltbm.AudioTokenMergeConfig.__doc__.split())


# --------------------------------------------------------------------------------------------- property-based tests
import math  # noqa: E402

from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from .models.tiny import MAX_SOURCE_POSITIONS  # noqa: E402
from .strategies import merge_settings  # noqa: E402

RATE = 16000
WINDOW = MAX_SOURCE_POSITIONS // 50 * RATE  # the tiny processors' 2 s window, in samples
HOP = 160  # samples per mel frame


@functools.cache
def _tiny_model(name):
    return {"qwen2_audio": QWEN, "audioflamingo3": AF3, "musicflamingo": MUSICFLAMINGO}[name].models()[1]


def _expected_placeholders(samples: int, setting: hf_ltbm.AudioTokenMergeConfig) -> int:
    """A clip's placeholders worked out from its length alone: its 30 s (here 2 s) windows, the mel frames of each
    (one per started hop), the encoder tokens of those frames, and the merged count of each window."""
    total = 0
    for start in range(0, samples, WINDOW):
        frames = math.ceil(min(WINDOW, samples - start) / HOP)
        total += setting.output_length(tokens_for_frames(frames))
    return total


@st.composite
def clip_lengths(draw, max_windows: int):
    """Lengths around every window boundary k*W (minus one sample, plus one, plus 320 and 321 samples: a last
    window without / with one encoder token), a few samples, and anything in between."""
    k = draw(st.integers(1, max_windows + 1))
    near = st.sampled_from([-1, 0, 1, 320, 321]).map(lambda d: k * WINDOW + d)
    return draw(st.one_of(near, st.integers(1, 700), st.integers(1, (max_windows + 1) * WINDOW)))


@settings(max_examples=100)
@given(data=st.data(), name=st.sampled_from(list(_PROCESSORS)), setting=merge_settings())
def test_placeholders_per_row_equal_each_rows_merged_count_at_any_length(data, name, setting):
    """For batches mixing clip lengths around every window boundary, and (AF3, Music Flamingo) any `max_audio_len`:
    each row gets exactly the sum of its windows' merged counts, worked out from the clip's length alone; `generate()`
    runs on the merging processor's prompts and gives the same tokens as the stock processor's (compacted in the
    model); a clip longer than the backbone takes is refused by length, never cut or spread over other rows."""
    make, merging_cls, prompt = _PROCESSORS[name]
    if name == "qwen2_audio":
        kwargs, kept = {}, 1
    else:
        max_audio_len = data.draw(st.one_of(st.integers(2, 8), st.floats(2.0, 8.0)), label="max_audio_len")
        kwargs = {"max_audio_len": max_audio_len}
        kept = int(max_audio_len // (WINDOW // RATE))
    lengths = data.draw(st.lists(clip_lengths(kept), min_size=1, max_size=3), label="lengths")
    audio = [tone(n / RATE, 300 + 97 * i)[:n] for i, n in enumerate(lengths)]
    audio = [np.pad(a, (0, n - len(a))) for a, n in zip(audio, lengths)]
    processor = make(merging=True, audio_token_merge=setting, **kwargs)
    too_long = [i for i, n in enumerate(lengths) if n > kept * WINDOW]
    if too_long:
        with pytest.raises(ValueError, match=rf"Audio {too_long[0]} is [0-9.]+ s long, but "):
            processor(text=[prompt] * len(audio), audio=audio, sampling_rate=RATE)
        event(f"{name}: refused")
        return
    event(f"{name}: {len(lengths)} clip(s), generated")
    call = {"sampling_rate": RATE, "return_tensors": "pt", **({"padding": True} if name == "qwen2_audio" else {})}
    batch = processor(text=[prompt] * len(audio), audio=audio, **call)
    assert _placeholders(batch) == [_expected_placeholders(n, setting) for n in lengths]
    model = _tiny_model(name)
    model.set_audio_token_merge(setting)
    generated = model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert generated.shape == (len(audio), batch["input_ids"].shape[1] + 2)
    stock = make(**kwargs)(text=[prompt] * len(audio), audio=audio, **call)
    from_stock = model.generate(**stock, max_new_tokens=2, do_sample=False)
    assert torch.equal(from_stock[:, stock["input_ids"].shape[1] :], generated[:, batch["input_ids"].shape[1] :])


def test_a_setting_given_to_from_pretrained_stays_out_of_the_tokenizer_config(tmp_path):
    """ProcessorMixin.from_pretrained hands unknown keywords to the tokenizer's AutoConfig, which stored the setting
    object as a config attribute; with transformers logging at INFO (as lmms-eval sets it) its log line then failed to
    serialise it and loading crashed."""
    from transformers.utils import logging as hf_logging

    from hf_ltbm.tiny import build_tiny_model

    model, processor = build_tiny_model()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    try:
        setting = hf_ltbm.AudioTokenMergeConfig(method="pool", keep_ratio=0.25)
        loaded = AutoProcessor.from_pretrained(tmp_path, audio_token_merge=setting)
        direct = Qwen2AudioLTBMProcessor.from_pretrained(tmp_path, audio_token_merge="global")
    finally:
        hf_logging.set_verbosity(verbosity)
    assert loaded.merge_config == setting and direct.merge_config.method == "global"
    with pytest.raises(ValueError, match=r"`keep_ratio` must be in \(0, 1\]"):
        Qwen2AudioLTBMProcessor.from_pretrained(tmp_path, audio_token_merge={"keep_ratio": 3})


def test_a_norm_preserving_setting_round_trips_through_the_processor_config(tmp_path):
    from hf_ltbm.tiny import build_tiny_processor

    setting = {"method": "pool", "keep_ratio": 0.25, "preserve_norm": True}
    build_tiny_processor("tiny-random-qwen2-audio", audio_token_merge=setting).save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "processor_config.json").read_text())["audio_token_merge"]
    assert stored["preserve_norm"] is True
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert loaded.merge_config == hf_ltbm.AudioTokenMergeConfig.from_value(setting)
