import copy
import math
import re

import numpy as np
import pytest
import torch
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

import hf_ltbm
from hf_ltbm.audio import AudioInputError
from hf_ltbm.backbones import backbone_for, max_audio_seconds
from hf_ltbm.pipeline import TASK, AudioTextToTextPipeline, build_prompt, register_pipeline
from hf_ltbm.tiny import TINY_MODELS, build_tiny_model

from .conftest import write_clip
from .encoding import encode, tokens_per_clip, unit_tokens, upstream_check_accepts_stand_in_video_processor

LTBM = {"method": "ltbm", "keep_ratio": 0.5}


def clip(seconds, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


@pytest.fixture(params=TINY_MODELS)
def pipe(request):
    model, processor = build_tiny_model(request.param, audio_token_merge=LTBM)
    return pipeline(TASK, model=model, processor=processor)


def direct(pipe, audio, prompt, max_new_tokens=4):
    """What the pipeline should produce, with the processor and generate() by hand."""
    proc = pipe.processor
    inputs = encode(proc, prompt, audio)
    out = pipe.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return proc.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_task_is_registered_with_our_class(pipe):
    assert isinstance(pipe, AudioTextToTextPipeline)
    assert PIPELINE_REGISTRY.supported_tasks[TASK]["impl"] is AudioTextToTextPipeline


def test_raw_array_and_file_give_the_direct_result(pipe, tmp_path):
    audio = clip(3)
    (result,) = pipe(audio, text="describe the sound", max_new_tokens=4)
    assert result["generated_text"] == direct(pipe, [audio], "describe the sound")[0]
    n = tokens_per_clip(pipe.processor, 3)
    assert (result["audio_tokens_before"], result["audio_tokens_after"]) == (
        n,
        hf_ltbm.output_length(n, keep_ratio=0.5),
    )
    assert result["input_text"] == "describe the sound"
    path = tmp_path / "a.wav"
    data = write_clip(path, seconds=2)
    (from_file,) = pipe(str(path), text="describe the sound", max_new_tokens=4)
    assert from_file["generated_text"] == direct(pipe, [data[:, 0]], "describe the sound")[0]


def test_batches_are_left_padded_and_match_generate_on_the_same_batch(pipe):
    audio = [clip(4, 1), clip(1.5, 2), clip(2.5, 3)]
    results = pipe(audio, text="what is in the audio ?", max_new_tokens=4, batch_size=3)
    assert [r[0]["generated_text"] for r in results] == direct(pipe, audio, "what is in the audio ?")
    before = [tokens_per_clip(pipe.processor, s) for s in (4, 1.5, 2.5)]  # 25 per second: 100, 37, 62
    assert [r[0]["audio_tokens_before"] for r in results] == before
    assert [r[0]["audio_tokens_after"] for r in results] == [hf_ltbm.output_length(n, keep_ratio=0.5) for n in before]
    # Batch size 2 splits the list into two generate() calls and keeps the order.
    again = pipe(audio, text="what is in the audio ?", max_new_tokens=4, batch_size=2)
    assert [r[0]["audio_tokens_before"] for r in again] == before


def test_chat_inputs_with_audio_parts(pipe, tmp_path):
    path = tmp_path / "a.flac"
    write_clip(path, seconds=2)
    chat = [{"role": "user", "content": [{"type": "audio", "path": str(path)}, {"type": "text", "text": "caption"}]}]
    (result,) = pipe(chat, max_new_tokens=3)
    assert result["input_text"] == chat and result["audio_tokens_before"] == tokens_per_clip(pipe.processor, 2)
    batch = pipe([chat, chat], max_new_tokens=3, batch_size=2)
    assert [r[0]["generated_text"] for r in batch] == [result["generated_text"]] * 2
    (full,) = pipe(chat, max_new_tokens=3, return_full_text=True)
    assert full["generated_text"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": result["generated_text"]}],
    }
    with pytest.raises(ValueError, match="needs a 'path', 'url' or 'audio'"):
        pipe([{"role": "user", "content": [{"type": "audio"}]}])
    with pytest.raises(ValueError, match="`text` cannot be combined with chat inputs"):
        pipe(chat, text="hi")


def test_dict_inputs_and_one_prompt_per_sample(pipe):
    a, b = clip(2, 5), clip(3, 6)
    results = pipe([{"audio": a, "text": "caption"}, {"audio": b, "text": "answer"}], max_new_tokens=2)
    assert [r[0]["input_text"] for r in results] == ["caption", "answer"]
    results = pipe([a, b], text=["caption", "answer"], max_new_tokens=2)
    assert [r[0]["input_text"] for r in results] == ["caption", "answer"]
    with pytest.raises(ValueError, match="Got 2 inputs but 3 texts"):
        pipe([a, b], text=["x", "y", "z"])


def test_generate_kwargs_are_not_mutated_and_sequences_are_grouped(pipe):
    kwargs = {"max_new_tokens": 3, "num_beams": 2, "num_return_sequences": 2}
    snapshot = copy.deepcopy(kwargs)
    results = pipe([clip(2), clip(1)], text="caption", generate_kwargs=kwargs, batch_size=2)
    assert kwargs == snapshot
    assert [len(r) for r in results] == [2, 2]
    with pytest.raises(ValueError, match="`max_new_tokens` was given twice"):
        pipe(clip(1), max_new_tokens=2, generate_kwargs={"max_new_tokens": 3})
    with pytest.raises(TypeError, match="Unexpected argument"):
        pipe(clip(1), max_tokens=3)


def test_call_time_override_is_used_and_restored(pipe):
    audio = clip(3)
    (off,) = pipe(audio, text="caption", max_new_tokens=3, audio_token_merge=None)
    n = tokens_per_clip(pipe.processor, 3)
    assert off["audio_tokens_after"] == off["audio_tokens_before"] == n
    (pool,) = pipe(audio, text="caption", max_new_tokens=3, audio_token_merge={"method": "pool", "keep_ratio": 0.2})
    assert pool["audio_tokens_after"] == hf_ltbm.output_length(n, keep_ratio=0.2)
    with hf_ltbm.audio_token_merge(pipe.model, {"method": "pool", "keep_ratio": 0.2}, pipe.processor):
        expected = direct(pipe, [audio], "caption", max_new_tokens=3)[0]
    assert pool["generated_text"] == expected
    assert pipe.model.audio_token_merge.method == "ltbm" and pipe.processor.merge_config.method == "ltbm"


def test_override_restored_after_an_exception(pipe, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("garbage")
    with pytest.raises(AudioInputError, match="Could not decode"):
        pipe([clip(1), str(bad)], text="caption", audio_token_merge="global", batch_size=1, max_new_tokens=2)
    assert pipe.model.audio_token_merge.method == "ltbm" and pipe.processor.merge_config.method == "ltbm"
    with pytest.raises(ValueError, match="`keep_ratio` must be in"):
        pipe(clip(1), audio_token_merge={"method": "pool", "keep_ratio": 0}, max_new_tokens=2)
    assert pipe.model.audio_token_merge.method == "ltbm"


def test_stock_processor_prompts_are_compacted_in_the_model(pipe):
    audio = clip(3)
    (merged,) = pipe(audio, text="caption", max_new_tokens=4)
    stock = copy.deepcopy(pipe.processor)
    stock.set_audio_token_merge(None)  # emits the unmerged placeholder count, like the upstream processor
    other = pipeline(TASK, model=pipe.model, processor=stock)
    (compacted,) = other(audio, text="caption", max_new_tokens=4)
    assert compacted["generated_text"] == merged["generated_text"]
    n = tokens_per_clip(pipe.processor, 3)
    assert compacted["audio_tokens_after"] == merged["audio_tokens_after"] == hf_ltbm.output_length(n, keep_ratio=0.5)


def test_from_a_saved_folder_with_model_kwargs(tmp_path):
    model, processor = build_tiny_model("tiny-random-qwen2-audio")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    pipe = pipeline(TASK, model=str(tmp_path), model_kwargs={"audio_token_merge": LTBM})
    assert isinstance(pipe.model, hf_ltbm.Qwen2AudioLTBMForConditionalGeneration)
    assert pipe.model.audio_token_merge.keep_ratio == 0.5
    (result,) = pipe(clip(2), text="caption", max_new_tokens=2)
    assert (result["audio_tokens_before"], result["audio_tokens_after"]) == (50, 25)


def test_existing_task_is_not_replaced(monkeypatch):
    class Other:
        pass

    monkeypatch.setitem(PIPELINE_REGISTRY.supported_tasks, TASK, {"impl": Other, "pt": ()})
    assert register_pipeline() is False
    assert PIPELINE_REGISTRY.supported_tasks[TASK]["impl"] is Other


def test_prompt_building(pipe):
    proc = pipe.processor
    if backbone_for(proc).chat_only:  # its processor takes audio from chats only: refused, naming the chat route
        with pytest.raises(ValueError, match=r"cannot write a Voxtral prompt.*apply_chat_template"):
            build_prompt(proc, "caption")
        return
    assert build_prompt(proc, f"{proc.audio_token} as is") == f"{proc.audio_token} as is"
    assert build_prompt(proc, "caption", 2).count(proc.audio_token) == 2
    proc = copy.deepcopy(proc)
    proc.chat_template = None
    expected = {"<|AUDIO|>": "<|audio_bos|><|AUDIO|><|audio_eos|>caption", "<sound>": "<sound>caption"}
    assert build_prompt(proc, "caption") == expected.get(proc.audio_token, f"{proc.audio_token}caption")


def test_non_audio_model_is_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    model, processor = build_tiny_model()
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    )
    with pytest.raises(ValueError, match="not an audio-language model"):
        AudioTextToTextPipeline(model=llama, processor=processor)
    torch.manual_seed(0)


def test_size_aware_attention_as_a_call_time_setting(pipe):
    audio = clip(3, 11)
    setting = {"method": "ltbm", "keep_ratio": 0.25, "size_aware_attention": True}
    kw = dict(text="caption", generate_kwargs={"max_new_tokens": 3})
    (aware,) = pipe(audio, audio_token_merge=setting, **kw)
    with hf_ltbm.audio_token_merge(pipe.model, setting, pipe.processor):
        expected = direct(pipe, [audio], "caption", max_new_tokens=3)[0]
    after = hf_ltbm.output_length(tokens_per_clip(pipe.processor, 3), keep_ratio=0.25)
    assert aware["generated_text"] == expected and aware["audio_tokens_after"] == after
    lm_config = pipe.model._merge_model.language_model.config
    assert lm_config._attn_implementation == "sdpa"  # restored with the setting


def _upstream_processor(processor):
    """The stock transformers processor with the same feature extractor, tokenizer and template."""
    upstream = processor._upstream_class
    if backbone_for(processor).chat_only:  # Voxtral: mistral-common holds the template
        return upstream(processor.feature_extractor, processor.tokenizer)
    if hasattr(processor, "video_processor"):  # Qwen2.5-Omni: upstream's check of a stand-in video processor
        with upstream_check_accepts_stand_in_video_processor():
            parts = (processor.image_processor, processor.video_processor, processor.feature_extractor)
            return upstream(*parts, processor.tokenizer, chat_template=processor.chat_template)
    kwargs = {"max_audio_len": processor.max_audio_len} if hasattr(processor, "max_audio_len") else {}
    return upstream(processor.feature_extractor, processor.tokenizer, chat_template=processor.chat_template, **kwargs)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_a_stock_upstream_processor_works_in_batches_of_mixed_lengths(name):
    """The pipeline with transformers' own processor: a top-level `padding=True` reached Audio Flamingo 3's feature
    extractor, which padded the features to the batch's longest clip (shorter than a window) and crashed the encoder.
    Text-only padding: the stock processor's prompts (compacted in the model) give the merging processor's results,
    row by row."""
    model, merging = build_tiny_model(name, audio_token_merge=LTBM)
    stock = _upstream_processor(merging)
    assert type(stock).__module__.startswith("transformers.")
    long = 31 if "flamingo" in name or "glmasr" in name else 7  # AF3, GLM-ASR: two windows in row 0
    audio = [clip(long, 1), clip(1.5, 2), clip(4, 3)]
    kw = dict(text="describe the sound", max_new_tokens=3, batch_size=2)  # the second batch holds no full window
    with_stock = pipeline(TASK, model=model, processor=stock)(audio, **kw)
    with_merging = pipeline(TASK, model=model, processor=merging)(audio, **kw)
    assert [r[0] for r in with_stock] == [r[0] for r in with_merging]
    units = [unit_tokens(merging, s) for s in (long, 1.5, 4)]
    assert [r[0]["audio_tokens_before"] for r in with_stock] == [sum(u) for u in units]  # AF3: [775, 37, 100]
    assert [r[0]["audio_tokens_after"] for r in with_stock] == [
        sum(hf_ltbm.output_length(n, keep_ratio=0.5) for n in u) for u in units
    ]


_BAD_CALLS = {
    "batch_size 0": (dict(batch_size=0), ValueError, "`batch_size` must be a positive integer, got 0"),
    "batch_size str": (dict(batch_size="2"), TypeError, "`batch_size` must be a positive integer, got '2'"),
    "max_new_tokens 0": (dict(max_new_tokens=0), ValueError, "`max_new_tokens` must be a positive integer, got 0"),
    "max_new_tokens str": (dict(max_new_tokens="3"), TypeError, "`max_new_tokens` must be a positive integer"),
    "text int": (dict(text=5), TypeError, "`text` must be a prompt (str) or a list of prompts"),
    "return_full_text": (dict(return_full_text="yes"), TypeError, "`return_full_text` must be True or False"),
    "generate_kwargs": (dict(generate_kwargs=[1]), TypeError, "`generate_kwargs` must be a dict"),
    "setting": (dict(audio_token_merge={"keep_ratio": 2}), ValueError, "`keep_ratio` must be in (0, 1]"),
    "missing file late": (dict(inputs="late-missing"), AudioInputError, "missing.wav' does not exist"),
    "undecodable file late": (dict(inputs="late-garbage"), AudioInputError, "Could not decode audio"),
    "too long late": (dict(inputs="late-long"), ValueError, "Audio 2 is 40.0 s long, but"),
    "empty array late": (dict(inputs="late-empty"), AudioInputError, "is empty"),
}


@pytest.mark.parametrize("case", sorted(_BAD_CALLS))
def test_a_call_that_cannot_be_served_fails_before_any_weights_run(pipe, tmp_path, case):
    """Arguments and every input of a list are checked before the first batch runs: a bad third input no longer
    fails the call after the first two were generated."""
    kwargs, error, message = _BAD_CALLS[case]
    if case == "too long late" and max_audio_seconds(pipe.processor) == math.inf:
        pytest.skip(f"{type(pipe.processor).__name__} takes audio of any length")
    kwargs = dict(kwargs)
    inputs = kwargs.pop("inputs", clip(1))
    if isinstance(inputs, str):
        garbage = tmp_path / "garbage.wav"
        garbage.write_text("not audio")
        late = {
            "late-missing": str(tmp_path / "missing.wav"),
            "late-garbage": str(garbage),
            "late-long": clip(40),
            "late-empty": np.zeros(0, dtype=np.float32),
        }[inputs]
        inputs = [clip(1), clip(2), late]
        kwargs.setdefault("batch_size", 1)
        if hasattr(pipe.processor, "max_audio_len"):
            pipe.processor.max_audio_len = 30  # Audio Flamingo 3: one 30 s window, as Qwen2-Audio takes
    ran = []
    hooks = [m.register_forward_pre_hook(lambda m, a: ran.append(m)) for m in pipe.model.modules()]
    try:
        with pytest.raises(error, match=re.escape(message)):
            pipe(inputs, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == []


@pytest.mark.parametrize("name", TINY_MODELS)
def test_the_readme_quickstart_prompt_is_accepted_by_every_backbones_processor(name):
    """`build_prompt` then the processor, as the README's quickstart does: accepted by every backbone's processor,
    or, for a chat-only backbone, refused by `build_prompt` itself with the chat route, which then works."""
    model, processor = build_tiny_model(name, audio_token_merge=LTBM)
    audio = clip(2.0)
    if backbone_for(processor).chat_only:
        with pytest.raises(ValueError, match="apply_chat_template"):
            hf_ltbm.build_prompt(processor, "Describe the audio.")
        # the chat route (the processor's apply_chat_template; hf-ltbm's encode_chats hands it the waveform as
        # base64, which needs no audio-loading library on any supported transformers)
        chat = [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": "what"}]}]
        inputs = backbone_for(processor).encode_chats(processor, [chat], 16000)
    else:
        prompt = hf_ltbm.build_prompt(processor, "Describe the audio.")
        inputs = processor(text=prompt, audio=audio, sampling_rate=16000, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
