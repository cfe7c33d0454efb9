"""The evaluation's heavier dependencies stay optional: the core package requires none of lmms-eval, aac-metrics or
jiwer, `import hf_ltbm` and the harness import without them, and the `eval` extra holds the scorers."""

import re
import subprocess
import sys
from pathlib import Path

import tomllib

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
OPTIONAL = ("lmms-eval", "aac-metrics", "jiwer", "vllm")


def _names(requirements):
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_core_package_requires_none_of_the_optional_engines():
    core = _names(PYPROJECT["project"]["dependencies"])
    assert not core & set(OPTIONAL)
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"aac-metrics", "jiwer", "pycocoevalcap", "datasets"} <= _names(extras["eval"])
    assert "lmms-eval" in _names(extras["lmms"])


def test_hf_ltbm_and_the_harness_import_without_them():
    blocked = ", ".join(f"{name!r}: None" for name in ("aac_metrics", "jiwer", "lmms_eval", "vllm"))
    code = (
        f"import sys; sys.modules.update({{{blocked}}}); import hf_ltbm, hf_ltbm.evaluation, hf_ltbm.cli; "
        "from hf_ltbm.evaluation import dcase_metrics; "
        "print(sorted(dcase_metrics(['a b', 'c'], [['a b'], ['c']])['unavailable']))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "['FENSE', 'FER', 'SPICE', 'SPIDEr', 'SPIDEr-FL']"
