"""A real vLLM engine (CPU, in-process) with the plugin: prompt lengths, outputs equal to hf-ltbm's transformers path,
mixed batches, caches and chunked prefill, for every served backbone."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hf_ltbm import AudioTokenMergeConfig

from .conftest import (
    BACKBONES,
    CLIP_SECONDS,
    LTBM_HALF,
    clip,
    greedy,
    is_mistral_format,
    printed_result,
    reference,
    require_vllm,
    stock_prompt,
    tokens_and_logprobs,
    vllm_request,
)

require_vllm()

#: log-prob tolerance against the transformers path (float32 on CPU; measured differences are 0 to 1e-6)
LOGPROB_ATOL = 1e-4
#: The four the issue names at two keep ratios, and every other registered method (defaults), with a token budget too.
SETTINGS = [
    {"method": method, "keep_ratio": ratio}
    for method in ("ltbm", "global", "pool", "prune_norm")
    for ratio in (0.5, 0.25)
] + [
    {"method": "prune_attention", "keep_ratio": 0.5},
    {"method": "segment_topk", "keep_ratio": 0.25, "options": {"num_segments": 5}},
    {"method": "random", "keep_ratio": 0.5, "seed": 3},
    {"method": "ltbm", "num_tokens": 40, "window": 1, "space": "projector", "key_source": "encoder_keys"},
    # norm-preserving merging, in both spaces
    {"method": "ltbm", "keep_ratio": 0.25, "preserve_norm": True},
    {"method": "pool", "keep_ratio": 0.5, "space": "projector", "preserve_norm": True},
]


#: Backbones that refuse settings reading the audio encoder's attention scores, and the refusal (as in transformers).
SCORES_REFUSED = {"glmasr": r"GLM-ASR's encoder rotates its queries and keys by position"}

_AUDIO = 24  # Voxtral's `[AUDIO]` (the tiny tekken tokenizer has Voxtral's control-token ids)


def _units(backbone: str, seconds: float) -> list[int]:
    """Encoder tokens per unit of a clip, from its length: one clip (Qwen2-Audio), 30 s windows (AF3; GLM-ASR at 4
    encoder frames per token), or whole 30 s chunks of 375 tokens (Voxtral: mistral-common pads the clip)."""
    if backbone == "qwen2_audio":
        return [round(25 * min(seconds, 30.0))]
    if backbone == "voxtral":
        return [375] * -(-round(seconds * 16000) // 480000)
    if backbone == "glmasr":
        full, rest = divmod(round(seconds * 100), 3000)  # mel frames: 3000 per window, then ((f - 1) // 2 + 1) // 4
        return [375] * full + ([((rest - 1) // 2 + 1) // 4] if rest else [])
    full, rest = divmod(round(seconds * 25), 750)
    return [750] * full + ([rest] if rest else [])


@pytest.fixture(scope="module", params=BACKBONES)
def served(request, tiny_folders, engines):
    backbone = request.param
    folder = tiny_folders[backbone]
    return backbone, folder, engines(folder)


def test_prompt_lengths_and_outputs_equal_the_transformers_path(served):
    """Every method: the prompt holds the text plus `M` placeholders per clip (AF3: per 30 s window, Voxtral: per 30 s
    chunk, a 45 s clip here), and greedy tokens and their log-probs equal hf-ltbm's transformers path."""
    backbone, folder, llm = served
    audio = clip(CLIP_SECONDS[backbone])
    units = _units(backbone, CLIP_SECONDS[backbone])
    (off,) = llm.generate(vllm_request(folder, audio, None), greedy(), use_tqdm=False)
    text_tokens = len(off.prompt_token_ids) - sum(units)
    worst = 0.0
    for setting in SETTINGS:
        if backbone in SCORES_REFUSED and AudioTokenMergeConfig.from_dict(setting).requires_scores:
            with pytest.raises(ValueError, match=SCORES_REFUSED[backbone]):  # before the engine runs anything
                llm.generate(vllm_request(folder, audio, setting), greedy(), use_tqdm=False)
            continue
        (out,) = llm.generate(vllm_request(folder, audio, setting), greedy(), use_tqdm=False)
        merged = sum(AudioTokenMergeConfig.from_dict(setting).output_length(n) for n in units)
        assert len(out.prompt_token_ids) == text_tokens + merged, setting
        expected = reference(folder, audio, setting)
        assert list(out.prompt_token_ids) == expected.prompt_ids
        tokens, logprobs = tokens_and_logprobs(out)
        assert tokens == expected.tokens, setting
        worst = max(worst, *(abs(a - b) for a, b in zip(logprobs, expected.logprobs)))
    assert worst <= LOGPROB_ATOL


def test_mixed_settings_in_one_call_equal_one_at_a_time(served):
    backbone, folder, llm = served
    audio = [clip(CLIP_SECONDS[backbone] - 3 * i, seed=10 + i) for i in range(3)]
    settings = [None, LTBM_HALF, {"method": "pool", "keep_ratio": 0.25}, {"method": "global", "keep_ratio": 0.5}]
    settings.append({"method": "global", "keep_ratio": 0.5, "preserve_norm": True})  # beside the same one without
    requests = [vllm_request(folder, a, s) for a in audio for s in settings]
    alone = [llm.generate(r, greedy(), use_tqdm=False)[0] for r in requests]
    together = llm.generate(requests, greedy(), use_tqdm=False)
    for one, batched in zip(alone, together):
        assert batched.prompt_token_ids == one.prompt_token_ids
        tokens, logprobs = tokens_and_logprobs(batched)
        tokens_one, logprobs_one = tokens_and_logprobs(one)
        assert tokens == tokens_one
        assert max(abs(a - b) for a, b in zip(logprobs, logprobs_one)) <= LOGPROB_ATOL


@pytest.mark.parametrize("backbone", ["qwen2_audio", "voxtral"])
def test_caches_never_mix_settings(backbone, tiny_folders, engines):
    """The merge setting is part of each clip's multimodal hash: a repeated request hits the prefix cache with the
    same output; the same clip under another setting with the same placeholder count (LTBM and Global Merge at one
    keep ratio) does not; an engine-level setting (config.json) hashes as the same setting given per request."""
    folder = tiny_folders[f"{backbone}-merged"]  # config.json: LTBM_HALF
    llm = engines(folder)
    audio = clip(12.0, seed=3)
    block = llm.llm_engine.vllm_config.cache_config.block_size
    first = llm.generate(vllm_request(folder, audio), greedy(), use_tqdm=False)[0]
    assert len(first.prompt_token_ids) > block and first.num_cached_tokens == 0
    again = llm.generate(vllm_request(folder, audio, dict(LTBM_HALF)), greedy(), use_tqdm=False)[0]
    assert again.num_cached_tokens == block * ((len(again.prompt_token_ids) - 1) // block)  # every full block
    assert tokens_and_logprobs(again) == tokens_and_logprobs(first)
    other = {"method": "global", "keep_ratio": 0.5}
    switched = llm.generate(vllm_request(folder, audio, other), greedy(), use_tqdm=False)[0]
    assert switched.prompt_token_ids == first.prompt_token_ids  # same tokens: only the hash tells them apart
    assert switched.num_cached_tokens == 0
    expected = reference(folder, audio, other)
    assert tokens_and_logprobs(switched)[0] == expected.tokens


@pytest.mark.parametrize("backbone", ["audioflamingo3", "voxtral", "glmasr"])
def test_chunked_prefill_gives_the_same_outputs(backbone, tiny_folders, engines):
    folder = tiny_folders[backbone]
    whole = engines(folder)
    chunked = engines(folder, max_num_batched_tokens=256, enable_chunked_prefill=True)
    seconds = {"audioflamingo3": 45.0, "voxtral": 75.0, "glmasr": 90.0}[backbone]
    audio = clip(seconds, seed=5)  # over 256 tokens at keep 0.25
    for setting in (None, LTBM_HALF, {"method": "prune_norm", "keep_ratio": 0.25}):
        (a,) = whole.generate(vllm_request(folder, audio, setting), greedy(), use_tqdm=False)
        (b,) = chunked.generate(vllm_request(folder, audio, setting), greedy(), use_tqdm=False)
        assert len(b.prompt_token_ids) > 256  # prefilled in several chunks
        assert tokens_and_logprobs(a)[0] == tokens_and_logprobs(b)[0]
        assert max(abs(x - y) for x, y in zip(tokens_and_logprobs(a)[1], tokens_and_logprobs(b)[1])) <= LOGPROB_ATOL


def test_voxtral_clips_of_any_length_in_one_prompt(tiny_folders, engines):
    """Two clips in one chat (45 s: two chunks; 10 s: one): each chunk of each clip keeps `M` placeholders, and the
    outputs equal the transformers path on the same chat."""
    folder = tiny_folders["voxtral"]
    llm = engines(folder)
    clips = [clip(45.0, seed=7), clip(10.0, seed=8)]
    for setting in (None, LTBM_HALF, {"method": "pool", "keep_ratio": 0.25}):
        (out,) = llm.generate(vllm_request(folder, clips, setting), greedy(), use_tqdm=False)
        per_chunk = 375 if setting is None else AudioTokenMergeConfig.from_dict(setting).output_length(375)
        assert list(out.prompt_token_ids).count(_AUDIO) == 3 * per_chunk
        expected = reference(folder, clips, setting)
        assert list(out.prompt_token_ids) == expected.prompt_ids
        tokens, logprobs = tokens_and_logprobs(out)
        assert tokens == expected.tokens, setting
        assert max(abs(a - b) for a, b in zip(logprobs, expected.logprobs)) <= LOGPROB_ATOL
        # a prompt that already holds the merged count (hf-ltbm's processor) is taken as it is
        (again,) = llm.generate(vllm_request(folder, clips, setting, expected.prompt_ids), greedy(), use_tqdm=False)
        assert again.prompt_token_ids == out.prompt_token_ids and tokens_and_logprobs(again)[0] == tokens


def test_voxtral_transcription_prompts_are_merged_as_in_transformers(tiny_folders, engines):
    """The prompt `/v1/audio/transcriptions` sends (Voxtral's `get_generation_prompt`, mistral-common's transcription
    request) keeps `M` placeholders per chunk; tokens and log-probs equal `VoxtralLTBMProcessor
    .apply_transcription_request` with hf-ltbm's model."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoProcessor
    from vllm.config.speech_to_text import SpeechToTextParams
    from vllm.model_executor.models.voxtral import VoxtralForConditionalGeneration

    folder = tiny_folders["voxtral"]
    llm = engines(folder)
    model_config = llm.llm_engine.model_config
    audio = clip(20.0, seed=9)
    stt_config = VoxtralForConditionalGeneration.get_speech_to_text_config(model_config, "transcribe")
    params = SpeechToTextParams(audio=audio, stt_config=stt_config, model_config=model_config, language="en")
    prompt = VoxtralForConditionalGeneration.get_generation_prompt(params)
    for setting in (None, LTBM_HALF):
        request = {**prompt, "mm_processor_kwargs": {"audio_token_merge": setting}}
        (out,) = llm.generate(request, greedy(), use_tqdm=False)
        processor = AutoProcessor.from_pretrained(folder, audio_token_merge=setting)
        model = AutoModelForSeq2SeqLM.from_pretrained(folder, audio_token_merge=setting, dtype=torch.float32).eval()
        inputs = processor.apply_transcription_request(
            language="en", audio=audio, model_id="tiny", sampling_rate=16000, format=["wav"]
        )
        with torch.no_grad():
            expected = model.generate(
                **inputs, max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True
            )
        assert list(out.prompt_token_ids) == inputs["input_ids"][0].tolist()
        per_chunk = 375 if setting is None else AudioTokenMergeConfig.from_dict(setting).output_length(375)
        assert list(out.prompt_token_ids).count(_AUDIO) == per_chunk
        tokens, logprobs = tokens_and_logprobs(out)
        assert tokens == expected.sequences[0, inputs["input_ids"].shape[1] :].tolist()
        expected_logprobs = [float(torch.log_softmax(s[0], -1)[t]) for s, t in zip(expected.scores, tokens)]
        assert max(abs(a - b) for a, b in zip(logprobs, expected_logprobs)) <= LOGPROB_ATOL


_STOCK = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from vllm import LLM, SamplingParams
    folder, prompt, path, options = sys.argv[1:5]
    audio = np.load(path)
    prompt = json.loads(prompt)
    llm = LLM(model=folder, distributed_executor_backend="uni", max_model_len=4096, enforce_eager=True,
              dtype="float32", seed=0, **json.loads(options))
    request = {"prompt" if isinstance(prompt, str) else "prompt_token_ids": prompt}
    out = llm.generate({**request, "multi_modal_data": {"audio": (audio, 16000)}},
                       SamplingParams(max_tokens=4, temperature=0, logprobs=1), use_tqdm=False)[0].outputs[0]
    tokens = list(out.token_ids)
    print("RESULT", json.dumps([tokens, [out.logprobs[i][t].logprob for i, t in enumerate(tokens)]]))
    """
)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_no_setting_or_keep_one_is_token_identical_to_stock_vllm(backbone, tiny_folders, engines, tmp_path):
    """Stock vLLM (the plugin disabled with VLLM_PLUGINS='', in another process) and the plugin with no setting or
    keep ratio 1.0 give the same tokens and log-probs."""
    import numpy as np

    folder = tiny_folders[backbone]
    audio = clip(CLIP_SECONDS[backbone], seed=2)
    np.save(tmp_path / "audio.npy", audio)
    env = {**os.environ, "VLLM_PLUGINS": ""}
    options = {"tokenizer_mode": "mistral"} if is_mistral_format(folder) else {}
    prompt = json.dumps(stock_prompt(folder, audio))
    run = subprocess.run(
        [sys.executable, "-c", _STOCK, folder, prompt, str(tmp_path / "audio.npy"), json.dumps(options)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stock_tokens, stock_logprobs = printed_result(run.stdout)
    llm = engines(folder)
    for setting in (..., None, {"method": "ltbm", "keep_ratio": 1.0}, {"method": "pool", "keep_ratio": 1.0}):
        (out,) = llm.generate(vllm_request(folder, audio, setting), greedy(), use_tqdm=False)
        tokens, logprobs = tokens_and_logprobs(out)
        assert tokens == stock_tokens, setting
        assert max(abs(a - b) for a, b in zip(logprobs, stock_logprobs)) <= 1e-6, setting


@pytest.mark.parametrize("backbone", ["qwen2_audio", "voxtral"])
def test_engine_level_mm_processor_kwargs_set_the_default_a_request_overrides(backbone, tiny_folders, engines):
    """`LLM(..., mm_processor_kwargs={"audio_token_merge": ...})` beats the model config and loses to a request."""
    folder = tiny_folders[f"{backbone}-merged"]  # config.json: LTBM_HALF
    pool = {"method": "pool", "keep_ratio": 0.25}
    llm = engines(folder, mm_processor_kwargs={"audio_token_merge": pool})
    audio = clip(6.0, seed=8)
    for setting, expected in ((..., pool), (LTBM_HALF, LTBM_HALF), (None, None)):
        (out,) = llm.generate(vllm_request(folder, audio, setting), greedy(), use_tqdm=False)
        reference_run = reference(folder, audio, expected)
        assert list(out.prompt_token_ids) == reference_run.prompt_ids
        assert tokens_and_logprobs(out)[0] == reference_run.tokens
