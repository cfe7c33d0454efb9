"""The lmms-eval models are an entry point, and importing hf_ltbm never imports lmms-eval (no lmms-eval needed)."""

import subprocess
import sys
from importlib.metadata import entry_points


def test_the_models_are_an_entry_point_and_hf_ltbm_never_imports_lmms_eval():
    (plugin,) = [e for e in entry_points(group="lmms_eval.models") if e.name == "hf_ltbm"]
    assert plugin.value == "hf_ltbm.integrations.lmms_eval:manifests"
    code = "import sys, hf_ltbm, hf_ltbm.integrations.lmms_eval; print('lmms_eval' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
