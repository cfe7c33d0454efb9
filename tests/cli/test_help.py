"""`hf-ltbm --help` and each `hf-ltbm COMMAND --help` import neither torch nor transformers, and still list what can be
chosen (methods, tiny models, tasks, merge spaces, key sources). Each runs in a fresh interpreter."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hf_ltbm.config import KEY_SOURCES, MERGE_SPACES
from hf_ltbm.evaluation.sweep import SIZE_AWARE_CHOICES
from hf_ltbm.evaluation.tasks import TASKS
from hf_ltbm.merging import available_methods
from hf_ltbm.tiny import TINY_MODELS

COMMANDS = ("demo", "generate", "inspect", "bench", "eval", "report")
MERGE = [*available_methods(), *MERGE_SPACES, *KEY_SOURCES]
#: What each help must name.
LISTED = {
    (): list(COMMANDS),
    ("demo",): list(TINY_MODELS),
    ("generate",): [*TINY_MODELS, *MERGE],
    ("inspect",): [*TINY_MODELS, *MERGE],
    ("bench",): ["merge-ops", "end-to-end", "vllm"],
    ("eval",): [*TINY_MODELS, *TASKS, *MERGE_SPACES, *KEY_SOURCES, *SIZE_AWARE_CHOICES],
    ("report",): ["--no-plots"],
}

_HELP = """
import contextlib, io, json, sys
from hf_ltbm.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main({argv!r})
    except SystemExit as exit:
        code = exit.code
loaded = {{name: name in sys.modules for name in ("torch", "transformers")}}
print(json.dumps({{"code": code, "help": out.getvalue(), **loaded}}))
"""


def _help(argv: list[str]) -> dict:
    env = {**os.environ, "COLUMNS": "1000"}  # one line per option: no name is wrapped at a hyphen
    code = textwrap.dedent(_HELP.format(argv=[*argv, "--help"]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", list(LISTED), ids=lambda c: " ".join(c) or "hf-ltbm")
def test_help_imports_neither_torch_nor_transformers_and_lists_the_choices(command):
    report = _help(list(command))
    assert report["code"] == 0
    assert (report["torch"], report["transformers"]) == (False, False)
    missing = [name for name in LISTED[command] if name not in report["help"]]
    assert not missing, f"`hf-ltbm {' '.join(command)} --help` does not list {missing}:\n{report['help']}"


def test_the_help_lists_the_builtin_methods_in_the_registry_order():
    """The methods come from the registry's table of built-ins (not imported to be listed)."""
    help_text = _help(["generate"])["help"]
    methods = "none, ltbm, global, pool, prune_norm, prune_attention, segment_topk, random"
    assert f"one of {methods} (default: ltbm)" in help_text
