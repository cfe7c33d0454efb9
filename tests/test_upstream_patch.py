"""The upstream proposal in docs/upstream: the transformers patch applies to a clean transformers 5.24.0 source tree,
its new tests pass there offline, it changes nothing while `audio_token_merge` is unset, and its merge agrees with
hf-ltbm's."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT / "docs" / "upstream"
SCRIPT = UPSTREAM / "apply_and_test.py"
PATCH = UPSTREAM / "audio_token_merge.patch"
NO_SOURCE = 2  # apply_and_test.py's exit status when no transformers 5.24.0 source can be had


def test_patch_touches_only_qwen2_audio_and_audioflamingo3():
    text = PATCH.read_text()
    targets = re.findall(r"^\+\+\+ b/(\S+)$", text, flags=re.MULTILINE)
    assert len(targets) == 11
    for target in targets:
        assert re.fullmatch(r"(src/transformers|tests)/models/(qwen2_audio|audioflamingo3)/\w+\.py", target), target
    new_files = re.findall(r"^--- /dev/null\n\+\+\+ b/(\S+)$", text, flags=re.MULTILINE)
    assert sorted(new_files) == sorted(t for t in targets if t.startswith("tests/"))
    for model in ("qwen2_audio", "audioflamingo3"):
        for kind in ("configuration", "modeling", "processing"):
            assert f"src/transformers/models/{model}/{kind}_{model}.py" in targets
    assert "src/transformers/models/audioflamingo3/modular_audioflamingo3.py" in targets


def test_patch_applies_and_its_tests_pass(tmp_path):
    report_path = tmp_path / "report.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--report", str(report_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    output = "\n".join((result.stdout + result.stderr).splitlines()[-120:])
    if result.returncode == NO_SOURCE:
        pytest.skip(
            "no transformers 5.24.0 source: the sdist could not be downloaded (pip download) nor found in the cache, "
            f"and the installed transformers is not 5.24.0:\n{output}"
        )
    assert result.returncode == 0, output

    report = json.loads(report_path.read_text())
    assert report["status"] == "passed"
    assert report["apply"] == "ok"
    pytest_result = report["pytest"]
    assert pytest_result["exit_status"] == 0, pytest_result["summary"]
    assert pytest_result["failed"] == 0 and pytest_result["errors"] == 0, pytest_result["summary"]
    # the new tests of both models ran: merge function, integration and processor tests
    assert pytest_result["passed"] >= 30, pytest_result["summary"]
    if report["harness"]["tests/test_modeling_common.py"] == "real":
        # ... and transformers' common model tests, on models that merge their audio tokens
        assert pytest_result["passed"] >= 200, pytest_result["summary"]
    assert report["unchanged"] == "passed"
    assert report["crosscheck_hf_ltbm"] == "passed"  # hf_ltbm is importable in this environment
    assert not Path(report["workdir"]).exists()  # the temporary tree is cleaned up
