import subprocess
import sys

from hf_ltbm.cli import main


def test_demo_prints_a_row_per_method(capsys):
    assert main(["demo", "--seconds", "4", "--methods", "ltbm,global,pool", "--show-map", "2"]) == 0
    out = capsys.readouterr().out
    assert "100 tokens" in out
    for name in ("ltbm(keep_ratio=0.25, window=3)", "global(keep_ratio=0.25)", "pool(keep_ratio=0.25)"):
        assert name in out
    assert "LTBM merge map" in out


def test_bad_setting_is_a_clear_error_with_nonzero_exit(capsys):
    assert main(["demo", "--keep-ratio", "1.5"]) == 2
    assert "`keep_ratio` must be in (0, 1]" in capsys.readouterr().err


def test_console_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "hf_ltbm", "demo", "--seconds", "2", "--methods", "pool"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pool(keep_ratio=0.25)" in proc.stdout
