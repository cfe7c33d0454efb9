"""The plugin in vLLM's default multi-process engine (loaded in the engine-core process too), settings given as
`hf_overrides`, and the errors of settings vLLM cannot serve, at engine start and per request."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .conftest import (
    LTBM_HALF,
    clip,
    greedy,
    printed_result,
    prompt_for,
    reference,
    require_vllm,
    tokens_and_logprobs,
    vllm_request,
)

require_vllm()

_RUN = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from vllm import LLM, SamplingParams
    folder, prompt, path, overrides, per_request = sys.argv[1:6]
    audio = np.load(path)
    llm = LLM(model=folder, max_model_len=4096, enforce_eager=True, dtype="float32", seed=0,
              hf_overrides=json.loads(overrides))
    results = []
    for setting in json.loads(per_request):
        request = {"prompt": prompt, "multi_modal_data": {"audio": (audio, 16000)}}
        if setting != "engine":
            request["mm_processor_kwargs"] = {"audio_token_merge": setting}
        out = llm.generate(request, SamplingParams(max_tokens=4, temperature=0, logprobs=1), use_tqdm=False)[0]
        tokens = list(out.outputs[0].token_ids)
        logprobs = [out.outputs[0].logprobs[i][t].logprob for i, t in enumerate(tokens)]
        results.append([len(out.prompt_token_ids), tokens, logprobs])
    print("RESULT", json.dumps(results))
    """
)


def _run(folder, audio, tmp_path, overrides, per_request, multiprocessing="1"):
    np.save(tmp_path / "audio.npy", audio)
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": multiprocessing}
    args = [folder, prompt_for(folder), str(tmp_path / "audio.npy"), json.dumps(overrides), json.dumps(per_request)]
    return subprocess.run([sys.executable, "-c", _RUN, *args], env=env, capture_output=True, text=True, timeout=900)


def test_the_default_multi_process_engine_serves_hf_overrides_and_per_request_settings(tiny_folders, tmp_path):
    folder = tiny_folders["qwen2_audio"]
    audio = clip(9.0, seed=4)
    pool = {"method": "pool", "keep_ratio": 0.25}
    run = _run(folder, audio, tmp_path, {"audio_token_merge": LTBM_HALF}, ["engine", pool, None])
    assert run.returncode == 0, run.stderr[-3000:]
    results = printed_result(run.stdout)
    for (length, tokens, logprobs), setting in zip(results, [LTBM_HALF, pool, None]):
        expected = reference(folder, audio, setting)
        assert length == len(expected.prompt_ids) and tokens == expected.tokens
        assert max(abs(a - b) for a, b in zip(logprobs, expected.logprobs)) <= 1e-4


def test_size_aware_attention_is_refused_at_engine_start(tiny_folders, tmp_path):
    run = _run(
        tiny_folders["qwen2_audio"],
        clip(1.0),
        tmp_path,
        {"audio_token_merge": {**LTBM_HALF, "size_aware_attention": True}},
        [],
        multiprocessing="0",
    )
    assert run.returncode != 0
    assert "`size_aware_attention=True` cannot be served by vLLM" in run.stderr


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"method": "nope"}, "Unknown `method` 'nope'; known methods: 'ltbm', 'global'"),
        ({"method": "ltbm", "keep_ratio": 1.5}, r"`keep_ratio` must be in \(0, 1\]"),
        ({"method": "pool", "options": {"window": 3}}, "Pass `window` as its own field"),
        ({**LTBM_HALF, "size_aware_attention": True}, "`size_aware_attention=True` cannot be served by vLLM"),
    ],
)
def test_a_request_setting_that_cannot_be_served_is_refused_and_the_engine_goes_on(
    setting, message, tiny_folders, engines
):
    folder = tiny_folders["qwen2_audio"]
    llm = engines(folder)
    audio = clip(3.0)
    with pytest.raises((ValueError, TypeError), match=message):
        llm.generate(vllm_request(folder, audio, setting), greedy(), use_tqdm=False)
    (out,) = llm.generate(vllm_request(folder, audio, LTBM_HALF), greedy(), use_tqdm=False)
    assert tokens_and_logprobs(out)[0] == reference(folder, audio, LTBM_HALF).tokens
