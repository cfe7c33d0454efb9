"""Qwen2.5-Omni's thinker served by vLLM (CPU, in-process) with the plugin: prompt lengths, outputs and the positions
the language model runs at, equal to hf-ltbm's transformers path; mixed batches, caches, chunked prefill, settings
from the config, the engine and the request; no setting equal to stock vLLM.

The tiny checkpoints are saved as Qwen2.5-Omni's releases are (the whole model's config, `model_type` `qwen2_5_omni`,
the thinker's weights under `thinker.`): vLLM serves the thinker of such a folder only.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from hf_ltbm import AudioTokenMergeConfig

from ...encoding import qwen2_5_omni_upstream_positions, upstream_interleaving_warning
from .conftest import (
    INSTRUCTION,
    LTBM_HALF,
    Reference,
    allow_qwen2_5_omni_without_torchvision,
    clip,
    greedy,
    printed_result,
    require_vllm,
    tokens_and_logprobs,
)

require_vllm()

LOGPROB_ATOL = 1e-4
CLIPS = (7.0, 4.0)  # one request, two clips: 175 and 100 encoder tokens
SETTINGS = [
    {"method": "pool", "keep_ratio": 0.25},
    {"method": "prune_norm", "keep_ratio": 0.5},
    {"method": "global", "keep_ratio": 0.5, "space": "projector"},
    {"method": "prune_attention", "keep_ratio": 0.5},  # the encoder's chunked attention scores
    {"method": "ltbm", "num_tokens": 40, "window": 1, "key_source": "encoder_keys"},
    {"method": "ltbm", "keep_ratio": 0.25, "preserve_norm": True},  # norm-preserving merging
]


@pytest.fixture(scope="module", autouse=True)
def _without_torchvision():
    allow_qwen2_5_omni_without_torchvision()  # vLLM's Qwen2.5-Omni module needs it where torchvision is missing


def _processor(setting):
    from hf_ltbm.backbones import get_backbone

    return get_backbone("qwen2_5_omni_thinker").tiny_processor(setting)


def _prompt(clips: int) -> str:
    parts = [{"type": "audio"}] * clips + [{"type": "text", "text": INSTRUCTION}]
    chat = [{"role": "user", "content": parts}]
    return _processor(None).apply_chat_template(chat, add_generation_prompt=True, tokenize=False)


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    """`{"plain": folder, "merged": folder}`: one tiny thinker saved as a whole Qwen2.5-Omni checkpoint
    (`save_tiny_model`), without and with `audio_token_merge` (`LTBM_HALF`) in its config.json."""
    from hf_ltbm.tiny import save_tiny_model

    folders = {}
    for name, setting in (("plain", None), ("merged", LTBM_HALF)):
        folder = tmp_path_factory.mktemp(f"omni-{name}")
        folders[name] = str(save_tiny_model("tiny-random-qwen2-5-omni", folder, audio_token_merge=setting))
    return folders


def _thinker(folder, setting):
    """hf-ltbm's merging thinker (float32) from the whole checkpoint `folder`."""
    from hf_ltbm.backbones.qwen2_5_omni import Qwen2_5OmniThinkerLTBMForConditionalGeneration

    return Qwen2_5OmniThinkerLTBMForConditionalGeneration.from_pretrained(
        folder, audio_token_merge=setting, dtype=torch.float32
    ).eval()


def reference(
    folder, audio: list, setting, max_tokens: int = 4, prompt: str | None = None, images: list | None = None
) -> tuple[Reference, torch.Tensor]:
    """hf-ltbm's merging thinker (float32) on the same whole checkpoint, clips (and images) and prompt (by default
    the chat of `audio`'s clips): its prompt, greedy tokens and log-probs, and the prompt's positions `[3, L]`."""
    model = _thinker(folder, setting)
    inputs = _processor(setting)(
        text=[prompt or _prompt(len(audio))], images=images, audio=audio, sampling_rate=16000, return_tensors="pt"
    )
    with torch.no_grad():
        positions = getattr(model(**inputs), "position_ids", None)  # merging off: the output holds none
        if positions is None:  # upstream's positions
            positions, _ = qwen2_5_omni_upstream_positions(model, inputs)
        positions = positions[:, 0]
        out = model.generate(
            **inputs, max_new_tokens=max_tokens, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
    tokens = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    logprobs = [float(torch.log_softmax(s[0].float(), -1)[t]) for s, t in zip(out.scores, tokens)]
    return Reference(inputs["input_ids"][0].tolist(), tokens, logprobs), positions


def request(audio: list, setting=...) -> dict:
    out = {"prompt": _prompt(len(audio)), "multi_modal_data": {"audio": [(a, 16000) for a in audio]}}
    if setting is not ...:
        out["mm_processor_kwargs"] = {"audio_token_merge": setting}
    return out


def _record(model) -> None:
    """Records the positions `[3, T]` of every step the language model runs."""
    inner = model.language_model.model
    model.hf_ltbm_positions = []
    if not hasattr(inner, "hf_ltbm_forward"):
        inner.hf_ltbm_forward = inner.forward

        def forward(input_ids, positions, *args, **kwargs):
            model.hf_ltbm_positions.append(positions.detach().clone().cpu())
            return inner.hf_ltbm_forward(input_ids, positions, *args, **kwargs)

        inner.forward = forward


def generate_with_positions(llm, req) -> tuple:
    """One request's output and the positions `[3, L]` its prompt ran at (its prefill steps, chunks included)."""
    llm.apply_model(_record)
    (out,) = llm.generate(req, greedy(), use_tqdm=False)
    (steps,) = llm.apply_model(lambda model: model.hf_ltbm_positions)
    length = len(out.prompt_token_ids)
    prefill, total = [], 0
    for step in steps:
        if total >= length:
            break
        prefill.append(step[:, : length - total])
        total += prefill[-1].shape[1]
    return out, torch.cat(prefill, 1)


def _merged_count(setting, seconds) -> int:
    n = round(25 * seconds)
    return n if setting is None else AudioTokenMergeConfig.from_value(setting).output_length(n)


def _check(out, positions, expected: Reference, expected_positions) -> float:
    assert list(out.prompt_token_ids) == expected.prompt_ids
    assert torch.equal(positions, expected_positions.to(positions.dtype))
    tokens, logprobs = tokens_and_logprobs(out)
    assert tokens == expected.tokens
    return max(abs(a - b) for a, b in zip(logprobs, expected.logprobs))


def test_prompt_lengths_positions_and_outputs_equal_the_transformers_path(omni, engines):
    """Two clips in one prompt, the setting of `hf_overrides` and others per request: the prompt holds the text plus
    `M` placeholders per clip, the language model runs at hf-ltbm's time-aligned positions (text after a clip at its
    unmerged position), and greedy tokens and log-probs equal hf-ltbm's transformers path. A 30 s clip at keep 0.5
    keeps 375 of its 750 tokens."""
    folder = omni["plain"]
    llm = engines(folder, hf_overrides={"audio_token_merge": LTBM_HALF})
    audio = [clip(seconds, seed=i) for i, seconds in enumerate(CLIPS)]
    off, _ = generate_with_positions(llm, request(audio, None))
    text_tokens = len(off.prompt_token_ids) - sum(_merged_count(None, s) for s in CLIPS)
    worst = 0.0
    for setting in [..., *SETTINGS]:
        resolved = LTBM_HALF if setting is ... else setting
        out, positions = generate_with_positions(llm, request(audio, setting))
        assert len(out.prompt_token_ids) == text_tokens + sum(_merged_count(resolved, s) for s in CLIPS), setting
        worst = max(worst, _check(out, positions, *reference(folder, audio, resolved)))
    long = [clip(30.0, seed=3)]
    out, positions = generate_with_positions(llm, request(long))
    audio_token = _processor(None).tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert list(out.prompt_token_ids).count(audio_token) == 375
    assert len(out.prompt_token_ids) == text_tokens - 2 + 375  # one clip less: its `<|audio_bos|>`, `<|audio_eos|>`
    worst = max(worst, _check(out, positions, *reference(folder, long, LTBM_HALF)))
    assert worst <= LOGPROB_ATOL


def test_mixed_settings_in_one_call_and_caches(omni, engines):
    """Mixed settings in one `generate()` call equal their one-at-a-time results; a repeated request hits the prefix
    cache with the same output, the same clips under another setting with the same count (LTBM and Global Merge at
    keep 0.5) do not."""
    folder = omni["plain"]
    llm = engines(folder, hf_overrides={"audio_token_merge": LTBM_HALF})
    clips = [[clip(9.0 - 2 * i, seed=10 + i), clip(3.0, seed=20 + i)] for i in range(2)]
    settings = [None, LTBM_HALF, {"method": "pool", "keep_ratio": 0.25}]
    requests = [request(a, s) for a in clips for s in settings]
    alone = [llm.generate(r, greedy(), use_tqdm=False)[0] for r in requests]
    together = llm.generate(requests, greedy(), use_tqdm=False)
    for one, batched in zip(alone, together):
        assert batched.prompt_token_ids == one.prompt_token_ids
        assert tokens_and_logprobs(batched)[0] == tokens_and_logprobs(one)[0]
        assert max(abs(a - b) for a, b in zip(tokens_and_logprobs(batched)[1], tokens_and_logprobs(one)[1])) <= 1e-4
    audio = [clip(12.0, seed=30)]
    block = llm.llm_engine.vllm_config.cache_config.block_size
    first = llm.generate(request(audio, LTBM_HALF), greedy(), use_tqdm=False)[0]
    again = llm.generate(request(audio), greedy(), use_tqdm=False)[0]  # the engine's setting: the same one
    assert first.num_cached_tokens == 0
    assert again.num_cached_tokens == block * ((len(again.prompt_token_ids) - 1) // block)
    assert tokens_and_logprobs(again) == tokens_and_logprobs(first)
    other = {"method": "global", "keep_ratio": 0.5}
    switched = llm.generate(request(audio, other), greedy(), use_tqdm=False)[0]
    assert switched.prompt_token_ids == first.prompt_token_ids and switched.num_cached_tokens == 0
    assert tokens_and_logprobs(switched)[0] == reference(folder, audio, other)[0].tokens


def test_chunked_prefill_and_an_engine_level_setting(omni, engines):
    """Prefill in 256-token chunks: every chunk's merged tokens run at their time-aligned positions and the outputs
    equal the transformers path; the engine's `mm_processor_kwargs` are the default a request overrides."""
    folder = omni["plain"]
    engine_setting = {"method": "ltbm", "keep_ratio": 0.75}
    llm = engines(
        folder,
        max_num_batched_tokens=256,
        enable_chunked_prefill=True,
        mm_processor_kwargs={"audio_token_merge": engine_setting},
    )
    audio = [clip(30.0, seed=5), clip(6.0, seed=6)]
    for setting, expected in ((..., engine_setting), (LTBM_HALF, LTBM_HALF), (None, None)):
        out, positions = generate_with_positions(llm, request(audio, setting))
        assert len(out.prompt_token_ids) > 256  # several chunks
        assert _check(out, positions, *reference(folder, audio, expected)) <= LOGPROB_ATOL


_STOCK = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from vllm import LLM, SamplingParams
    folder, prompt, path = sys.argv[1:4]
    audio = np.load(path)
    llm = LLM(model=folder, distributed_executor_backend="uni", max_model_len=4096, enforce_eager=True,
              dtype="float32", seed=0)
    out = llm.generate({"prompt": prompt, "multi_modal_data": {"audio": (audio, 16000)}},
                       SamplingParams(max_tokens=4, temperature=0, logprobs=1), use_tqdm=False)[0]
    tokens = list(out.outputs[0].token_ids)
    logprobs = [out.outputs[0].logprobs[i][t].logprob for i, t in enumerate(tokens)]
    print("RESULT", json.dumps([list(out.prompt_token_ids), tokens, logprobs]))
    """
)


def test_no_setting_or_keep_one_is_token_identical_to_stock_vllm(omni, engines, tmp_path):
    """Stock vLLM (the plugin disabled, in another process) and the plugin with merging off, or keep ratio 1.0, give
    the same prompt, tokens and log-probs; the plugin serves a folder whose config.json holds a setting (merged by
    default)."""
    audio = clip(10.0, seed=2)
    np.save(tmp_path / "audio.npy", audio)
    env = {**os.environ, "VLLM_PLUGINS": ""}
    run = subprocess.run(
        [sys.executable, "-c", _STOCK, omni["plain"], _prompt(1), str(tmp_path / "audio.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stock_prompt, stock_tokens, stock_logprobs = printed_result(run.stdout)
    llm = engines(omni["merged"])
    for setting in (None, {"method": "ltbm", "keep_ratio": 1.0}, {"method": "pool", "keep_ratio": 1.0}):
        (out,) = llm.generate(request([audio], setting), greedy(), use_tqdm=False)
        assert list(out.prompt_token_ids) == stock_prompt
        tokens, logprobs = tokens_and_logprobs(out)
        assert tokens == stock_tokens, setting
        assert max(abs(a - b) for a, b in zip(logprobs, stock_logprobs)) <= 1e-6, setting
    (merged,) = llm.generate(request([audio]), greedy(), use_tqdm=False)
    expected, _ = reference(omni["merged"], [audio], LTBM_HALF)
    assert list(merged.prompt_token_ids) == expected.prompt_ids and tokens_and_logprobs(merged)[0] == expected.tokens


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_position_offsets_survive_the_embedding_dtype(dtype):
    from hf_ltbm.integrations.vllm.qwen2_5_omni import decode_offsets, encode_offsets

    offsets = torch.tensor([0, 1, -1, 255, 256, -300, 749, -749, 32767, -32767])
    channels = encode_offsets(offsets, torch.zeros(1, dtype=dtype))
    assert channels.dtype == dtype and torch.equal(decode_offsets(channels), offsets)
    with pytest.raises(ValueError, match="exceed"):
        encode_offsets(torch.tensor([40000]), torch.zeros(1))


def test_the_setting_is_read_from_the_whole_checkpoint_config_or_its_thinker():
    from transformers import Qwen2_5OmniConfig

    from hf_ltbm.integrations.vllm.qwen2_5_omni import settings_config

    config = Qwen2_5OmniConfig()
    assert settings_config(config) is config.thinker_config
    config.thinker_config.audio_token_merge = "ltbm"
    assert settings_config(config) is config.thinker_config
    config.audio_token_merge = json.loads('{"method": "pool"}')  # as hf_overrides sets it
    assert settings_config(config) is config


@pytest.mark.parametrize(
    "stages, graphs, message",
    [(2, "NONE", "pipeline_parallel_size=2"), (1, "FULL", "cudagraph_mode=FULL")],
)
def test_merged_audio_where_its_positions_cannot_be_applied_is_refused(stages, graphs, message):
    """Pipeline parallelism (the later stages never see the offsets) and full CUDA graphs for prefill batches (a
    replayed forward adds nothing) fail a step with merged audio by name, before it runs."""
    from types import SimpleNamespace

    from vllm.config.compilation import CUDAGraphMode

    from hf_ltbm.integrations.vllm.qwen2_5_omni import (
        POSITION_CHANNELS,
        Qwen2_5OmniThinkerLTBMForConditionalGeneration,
    )

    model = SimpleNamespace(
        config=SimpleNamespace(text_config=SimpleNamespace(hidden_size=8)),
        vllm_config=SimpleNamespace(compilation_config=SimpleNamespace(cudagraph_mode=CUDAGraphMode[graphs])),
        _position_offsets=None,
        _pipeline_stages=stages,
    )
    merged = torch.zeros(3, 8 + POSITION_CHANNELS)
    ids, mask = torch.zeros(5, dtype=torch.long), torch.tensor([False, True, True, True, False])
    with pytest.raises(ValueError, match=message):
        Qwen2_5OmniThinkerLTBMForConditionalGeneration.embed_input_ids(model, ids, [merged], is_multimodal=mask)


def test_the_default_multi_process_engine_serves_hf_overrides_and_per_request_settings(omni, tmp_path):
    """vLLM's default engine (the model in another process, which gets the setting as a tensor field and the
    positions' offsets with the embeddings): equal to the transformers path."""
    from .test_processes import _RUN

    folder = omni["plain"]
    audio = clip(8.0, seed=4)
    np.save(tmp_path / "audio.npy", audio)
    pool = {"method": "pool", "keep_ratio": 0.25}
    args = [folder, _prompt(1), str(tmp_path / "audio.npy"), json.dumps({"audio_token_merge": LTBM_HALF})]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    run = subprocess.run(
        [sys.executable, "-c", _RUN, *args, json.dumps(["engine", None, pool])],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for (length, tokens, logprobs), setting in zip(printed_result(run.stdout), (LTBM_HALF, None, pool)):
        expected, _ = reference(folder, [audio], setting)
        assert length == len(expected.prompt_ids) and tokens == expected.tokens, setting
        assert max(abs(a - b) for a, b in zip(logprobs, expected.logprobs)) <= LOGPROB_ATOL


VIDEO_PROMPT = "<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|>{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def frames_videos(monkeypatch):
    """vLLM's Qwen2.5-Omni processor with `tests.encoding.frames_video_processor()` as its video processor (Qwen2-VL's
    needs torchvision): in-process engines only."""
    import copy

    from hf_ltbm.integrations.vllm.qwen2_5_omni import Qwen2_5OmniThinkerLTBMProcessingInfo

    from ...encoding import with_frames_video_processor

    stock = Qwen2_5OmniThinkerLTBMProcessingInfo.get_hf_processor
    monkeypatch.setattr(
        Qwen2_5OmniThinkerLTBMProcessingInfo,
        "get_hf_processor",
        lambda self, **kwargs: with_frames_video_processor(copy.copy(stock(self, **kwargs))),
    )


def video_inputs(folder, video, audio, setting):
    """hf-ltbm's merging thinker (float32) on the whole checkpoint, and its inputs for a video with its audio track
    (`use_audio_in_video=True`)."""
    import transformers
    from packaging import version

    from ...encoding import with_frames_video_processor

    model = _thinker(folder, setting)
    processor = with_frames_video_processor(_processor(setting))
    options = {"use_audio_in_video": True}
    if version.parse(transformers.__version__) >= version.parse("5.20"):
        options = {"load_audio_from_video": True, "audio_from_video_indices": [0]}
    inputs = processor(
        text=[VIDEO_PROMPT.format(INSTRUCTION)], videos=[video], audio=[audio], return_tensors="pt", **options
    )
    return model, inputs


def greedy_at(model, inputs, positions, max_tokens: int = 4) -> tuple[list[int], list[float]]:
    """Greedy tokens and log-probs of the transformers model on `inputs` run at `positions` `[3, L]` (the generated
    tokens after the prompt's last position, as vLLM numbers them)."""
    ids, tokens, logprobs = inputs["input_ids"], [], []
    extra = {key: value for key, value in inputs.items() if key not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        for step in range(max_tokens):
            after = positions.max() + 1 + torch.arange(step)
            at = torch.cat([positions, after[None].expand(3, -1)], 1)[:, None]
            logits = model(input_ids=ids, position_ids=at, use_audio_in_video=True, **extra).logits[0, -1]
            token = int(logits.argmax())
            tokens.append(token)
            logprobs.append(float(torch.log_softmax(logits.float(), -1)[token]))
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
    return tokens, logprobs


@upstream_interleaving_warning
def test_audio_in_video_is_merged_chunk_by_chunk_as_in_the_transformers_path(omni, engines, frames_videos):
    """A 5 s video (3 chunks of frames) with its 7 s audio track, `use_audio_in_video=True`: under a setting the
    video's interleaved run holds `merged_length(n)` placeholders per 2 s audio chunk (the prompt equals hf-ltbm's
    transformers processor's), the merged tokens run at the transformers path's time-aligned positions on vLLM's
    numbering of the unmerged prompt, and tokens and log-probs equal the transformers model run at those positions."""
    folder = omni["plain"]
    llm = engines(folder, hf_overrides={"audio_token_merge": LTBM_HALF})
    video, audio = np.zeros((10, 56, 56, 3), np.uint8), clip(7.0, seed=7)
    audio_token = _processor(None).tokenizer.convert_tokens_to_ids("<|AUDIO|>")

    def run(setting):
        req = {
            "prompt": VIDEO_PROMPT.format(INSTRUCTION),
            "multi_modal_data": {"video": [video], "audio": [(audio, 16000)]},
            "mm_processor_kwargs": {"use_audio_in_video": True, "audio_token_merge": setting},
        }
        return generate_with_positions(llm, req)

    # merging off: transformers' prompt, but vLLM 0.32 numbers the interleaved block one token late (each token of
    # the block, from its `<|audio_bos|>`, gets the position transformers gives the next one): the plugin keeps vLLM's
    # numbering of the unmerged prompt and moves each merged token from its chunk's first frame as the transformers
    # path does
    off, stock = run(None)
    model, inputs = video_inputs(folder, video, audio, None)
    unmerged = inputs["input_ids"][0]
    assert list(off.prompt_token_ids) == unmerged.tolist()
    upstream, _ = qwen2_5_omni_upstream_positions(model, inputs, use_audio_in_video=True)
    shift = stock - upstream[:, 0]
    chunks = [50, 50, 50, 25]  # 7 s of audio: 175 tokens in 2 s chunks
    starts = np.cumsum([0] + chunks[:-1]).tolist()
    audio_shift = shift[:, unmerged == audio_token]
    worst = 0.0
    for setting, placeholders in ((LTBM_HALF, 3 * 25 + 13), ({"method": "pool", "keep_ratio": 0.25}, 3 * 13 + 7)):
        out, positions = run(setting)
        model, inputs = video_inputs(folder, video, audio, setting)
        ids = inputs["input_ids"][0]
        assert list(out.prompt_token_ids) == ids.tolist() and ids.tolist().count(audio_token) == placeholders
        with torch.no_grad():
            expected = model(**inputs, use_audio_in_video=True).position_ids[:, 0]
        expected[:, ids != audio_token] += shift[:, unmerged != audio_token]
        merged_chunks = [AudioTokenMergeConfig.from_value(setting).output_length(n) for n in chunks]
        expected[:, ids == audio_token] += audio_shift[:, starts].repeat_interleave(torch.tensor(merged_chunks), 1)
        assert torch.equal(positions, expected)
        tokens, logprobs = tokens_and_logprobs(out)
        reference_tokens, reference_logprobs = greedy_at(model, inputs, expected)
        assert tokens == reference_tokens, setting
        worst = max(worst, *(abs(a - b) for a, b in zip(logprobs, reference_logprobs)))
    assert worst <= LOGPROB_ATOL


@upstream_interleaving_warning
def test_audio_in_video_with_standalone_clips_is_refused_under_a_setting(omni, engines, frames_videos):
    llm = engines(omni["plain"], hf_overrides={"audio_token_merge": LTBM_HALF})
    prompt = "<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|><|vision_bos|><|VIDEO|><|vision_eos|>hi<|im_end|>\n"
    req = {
        "prompt": prompt,
        "multi_modal_data": {"video": [np.zeros((4, 56, 56, 3), np.uint8)], "audio": [(clip(2.0), 16000)] * 2},
        "mm_processor_kwargs": {"use_audio_in_video": True},
    }
    with pytest.raises(ValueError, match="every audio item to come from a video"):
        llm.generate(req, greedy(), use_tqdm=False)


def test_vllm_serve_merges_a_whole_checkpoint_with_hf_overrides(omni, tmp_path):
    """`vllm serve QWEN2.5-OMNI --hf-overrides '{"audio_token_merge": ...}'` on 127.0.0.1: chat completions with an
    `input_audio` part hold the text plus the merged count, under the served setting or a request's; `None` serves the
    stock prompt."""
    from .conftest import vllm_serve
    from .test_server import _chat

    arguments = ["--served-model-name", "tiny", "--trust-request-mm-kwargs"]
    arguments += ["--hf-overrides", json.dumps({"audio_token_merge": LTBM_HALF})]
    pool = {"method": "pool", "keep_ratio": 0.25}
    with vllm_serve(omni["plain"], arguments, tmp_path) as base:
        results = [_chat(base, clip(10.0, seed=1), setting) for setting in (None, ..., pool)]  # 250 encoder tokens
    assert all(status == 200 for status, _ in results), results
    stock, served, pooled = (body["usage"]["prompt_tokens"] for _, body in results)
    assert stock - served == 250 - _merged_count(LTBM_HALF, 10.0)
    assert stock - pooled == 250 - _merged_count(pool, 10.0)


def test_an_image_next_to_merged_audio_equals_the_transformers_path(omni, engines):
    """An image before a clip: the prompt, the positions the language model runs at (the image's 3D positions, the
    merged clip's time-aligned ones after it), tokens and log-probs equal hf-ltbm's transformers path."""
    from PIL import Image

    folder = omni["plain"]
    llm = engines(folder, hf_overrides={"audio_token_merge": LTBM_HALF})
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((56, 84, 3)) * 255).astype(np.uint8))
    audio = clip(6.0, seed=8)
    prompt = (
        "<|im_start|>user\n<|vision_bos|><|IMAGE|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|>"
        f"{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    )
    worst = 0.0
    for setting in (None, LTBM_HALF):
        req = {
            "prompt": prompt,
            "multi_modal_data": {"image": [image], "audio": [(audio, 16000)]},
            "mm_processor_kwargs": {"audio_token_merge": setting},
        }
        out, positions = generate_with_positions(llm, req)
        expected = reference(folder, [audio], setting, prompt=prompt, images=[image])
        worst = max(worst, _check(out, positions, *expected))
    assert worst <= LOGPROB_ATOL
