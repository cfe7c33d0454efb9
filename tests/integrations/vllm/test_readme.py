"""The README's "Serving with vLLM" section, run for real: its Python example on a tiny checkpoint, its `vllm serve`
and `hf-ltbm bench vllm` commands, and its OpenAI client example against that server."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

from .conftest import TINY, require_vllm, vllm_serve

require_vllm()

ROOT = Path(__file__).resolve().parents[3]
SECTION = re.search(r"^## Serving with vLLM\n.*?(?=^## )", (ROOT / "README.md").read_text(), flags=re.S | re.M)[0]
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", SECTION, flags=re.S)


def test_the_serving_section_runs(tmp_path, monkeypatch):
    from hf_ltbm.tiny import build_tiny_model

    from ...conftest import write_clip

    monkeypatch.chdir(tmp_path)
    write_clip(tmp_path / "clip.wav", 3)
    model, processor = build_tiny_model(TINY["qwen2_audio"])
    model.save_pretrained(tmp_path / "stock")
    processor.save_pretrained(tmp_path / "stock")
    python = [body for lang, body in BLOCKS if lang == "python"]
    (commands,) = [body for lang, body in BLOCKS if lang == "bash"]
    assert len(python) == 2

    namespace = {}
    offline = python[0].replace('"Qwen/Qwen2-Audio-7B-Instruct"', repr(str(tmp_path / "stock")))
    offline = offline.replace('LLM(model="qwen2-audio-ltbm")', 'LLM(model="qwen2-audio-ltbm", dtype="float32")')
    exec(compile(offline.replace("max_tokens=64", "max_tokens=4"), "README.md", "exec"), namespace)
    merged, pooled = namespace["merged"], namespace["pooled"]
    # a 3 s clip: 75 encoder tokens, 38 after LTBM at 0.5 (the saved setting), 19 after pooling at 0.25
    assert len(merged.prompt_token_ids) - len(pooled.prompt_token_ids) == 38 - 19

    serve, bench = commands.strip().splitlines()
    folder, *arguments = shlex.split(serve)[2:]
    with vllm_serve(folder, arguments, tmp_path) as base:
        client = python[1].replace("http://localhost:8000", base).replace("max_tokens=64", "max_tokens=4")
        exec(compile(client, "README.md", "exec"), namespace)
    assert namespace["reply"].usage.prompt_tokens == len(pooled.prompt_token_ids)  # 19 audio tokens again

    bench_args = shlex.split(bench)[1:] + ["--quick", "--out", str(tmp_path / "bench")]
    run = subprocess.run([sys.executable, "-m", "hf_ltbm", *bench_args], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| ltbm keep 0.5 |" in (tmp_path / "bench" / "results.md").read_text()
