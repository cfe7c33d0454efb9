"""A real `vllm serve` on 127.0.0.1 with a folder saved by hf-ltbm (its config.json carries the merge setting): the
OpenAI chat API with audio parts, per-request settings, concurrent load and malformed requests."""

import base64
import io
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import soundfile as sf

from hf_ltbm import AudioTokenMergeConfig

from .conftest import LTBM_HALF, clip, require_vllm, vllm_serve

require_vllm()


def _post(url: str, body: dict, timeout: float = 300) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def server(tiny_folders, tmp_path_factory):
    """`vllm serve` of the merged Qwen2-Audio folder on 127.0.0.1 (stopped after the module)."""
    arguments = ["--served-model-name", "tiny", "--trust-request-mm-kwargs"]  # per-request settings allowed
    with vllm_serve(tiny_folders["qwen2_audio-merged"], arguments, tmp_path_factory.mktemp("server")) as base:
        yield base


def _wav(audio) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="WAV", subtype="FLOAT")
    return base64.b64encode(buffer.getvalue()).decode()


def _chat(base: str, audio, setting=..., max_tokens: int = 4) -> tuple[int, dict]:
    body = {
        "model": "tiny",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": _wav(audio), "format": "wav"}},
                    {"type": "text", "text": "describe the sound"},
                ],
            }
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if setting is not ...:
        body["mm_processor_kwargs"] = {"audio_token_merge": setting}  # what the OpenAI client's extra_body sends
    return _post(f"{base}/v1/chat/completions", body)


def test_prompt_tokens_are_text_plus_merged_audio_and_a_request_can_override(server):
    audio = clip(10.0, seed=1)  # 250 encoder tokens
    status, off = _chat(server, audio, None)
    assert status == 200, off
    text = off["usage"]["prompt_tokens"] - 250
    for setting in (..., {"method": "pool", "keep_ratio": 0.25}, {"method": "global", "keep_ratio": 0.5}):
        status, merged = _chat(server, audio, setting)
        assert status == 200, merged
        expected = AudioTokenMergeConfig.from_value(LTBM_HALF if setting is ... else setting).output_length(250)
        assert merged["usage"]["prompt_tokens"] == text + expected


def test_concurrent_requests_with_mixed_settings_equal_their_one_at_a_time_outputs(server):
    settings = [..., None, {"method": "pool", "keep_ratio": 0.25}, {"method": "prune_norm", "keep_ratio": 0.5}]
    clips = [clip(4.0 + 2 * i, seed=20 + i) for i in range(8)]
    jobs = [(c, s) for c in clips for s in settings]  # 32 requests
    alone = [_chat(server, c, s) for c, s in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        together = list(pool.map(lambda job: _chat(server, *job), jobs))
    for (status_a, a), (status_b, b) in zip(alone, together):
        assert status_a == status_b == 200
        assert b["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]
        assert b["usage"] == a["usage"]


@pytest.mark.parametrize(
    "setting, words",
    [
        ({"method": "nope"}, ["method", "nope", "ltbm", "global", "pool"]),
        ({"method": "ltbm", "keep_ratio": 2}, ["keep_ratio", "(0, 1]", "2"]),
        ({"method": "pool", "options": {"bogus": 1}}, ["bogus", "pool"]),
        ({**LTBM_HALF, "size_aware_attention": True}, ["size_aware_attention", "vLLM"]),
    ],
)
def test_a_malformed_setting_gets_http_400_naming_it_and_the_server_goes_on(server, setting, words):
    status, error = _chat(server, clip(2.0), setting)
    assert status == 400, error
    message = json.dumps(error)
    assert all(word in message for word in words), message
    status, good = _chat(server, clip(2.0))
    assert status == 200 and good["usage"]["prompt_tokens"] > 0


def test_any_checkpoint_served_with_hf_overrides_merges(tiny_folders, tmp_path):
    """`vllm serve FOLDER --hf-overrides '{"audio_token_merge": ...}'` on a checkpoint without a setting."""
    setting = {"method": "global", "keep_ratio": 0.25}
    arguments = ["--served-model-name", "tiny", "--hf-overrides", json.dumps({"audio_token_merge": setting})]
    with vllm_serve(tiny_folders["qwen2_audio"], arguments, tmp_path) as base:
        status, merged = _chat(base, clip(10.0, seed=1))
    assert status == 200, merged
    with vllm_serve(tiny_folders["qwen2_audio"], ["--served-model-name", "tiny"], tmp_path) as base:
        status, stock = _chat(base, clip(10.0, seed=1))
    assert status == 200, stock
    assert stock["usage"]["prompt_tokens"] - merged["usage"]["prompt_tokens"] == 250 - 63


def test_voxtral_is_served_with_merged_chunks(tiny_folders, tmp_path):
    """`vllm serve VOXTRAL --tokenizer-mode mistral --hf-overrides ...`: mistral-common writes the chat's prompt (375
    `[AUDIO]` per 30 s chunk) and each chunk of a 45 s clip keeps `M` of them, under the served setting or a request's;
    `None` serves the stock prompt."""
    setting = {"method": "global", "keep_ratio": 0.25}
    arguments = ["--served-model-name", "tiny", "--tokenizer-mode", "mistral", "--trust-request-mm-kwargs"]
    arguments += ["--hf-overrides", json.dumps({"audio_token_merge": setting})]
    audio = clip(45.0, seed=6)  # two chunks
    with vllm_serve(tiny_folders["voxtral"], arguments, tmp_path) as base:
        results = [_chat(base, audio, s) for s in (None, ..., LTBM_HALF)]
    assert all(status == 200 for status, _ in results), results
    stock, served, requested = (body["usage"]["prompt_tokens"] for _, body in results)
    text = stock - 2 * 375
    assert served == text + 2 * AudioTokenMergeConfig.from_value(setting).output_length(375)  # 2 * 94
    assert requested == text + 2 * AudioTokenMergeConfig.from_value(LTBM_HALF).output_length(375)  # 2 * 188


def test_glmasr_is_served_with_merged_windows(tiny_folders, tmp_path):
    """`vllm serve GLM-ASR` with the setting in config.json: each 30 s window of a 45 s clip (375 + 187 tokens, 4
    encoder frames each) keeps `M` placeholders, under the served setting or a request's; `None` serves the stock
    prompt, and a setting that reads the encoder's attention scores gets HTTP 400 naming why."""
    arguments = ["--served-model-name", "tiny", "--trust-request-mm-kwargs"]
    audio = clip(45.0, seed=6)
    pool = {"method": "pool", "keep_ratio": 0.25}
    with vllm_serve(tiny_folders["glmasr-merged"], arguments, tmp_path) as base:
        results = [_chat(base, audio, s) for s in (None, ..., pool)]
        refused_status, refused = _chat(base, audio, {"method": "prune_attention", "keep_ratio": 0.5})
    assert all(status == 200 for status, _ in results), results
    stock, served, requested = (body["usage"]["prompt_tokens"] for _, body in results)
    text = stock - (375 + 187)
    half, quarter = AudioTokenMergeConfig.from_value(LTBM_HALF), AudioTokenMergeConfig.from_value(pool)
    assert served == text + half.output_length(375) + half.output_length(187)  # 188 + 94
    assert requested == text + quarter.output_length(375) + quarter.output_length(187)  # 94 + 47
    assert refused_status == 400, refused
    assert "rotates its queries and keys" in json.dumps(refused), refused
