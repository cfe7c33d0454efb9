import csv
import json

from hf_ltbm.cli import main


def test_quick_run_writes_every_output(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    for name in ("results.md", "merge_ops.csv", "end_to_end.csv", "environment.json"):
        assert (out / name).stat().st_size > 0
    for name in ("merge_ops_time.png", "prefill_speedup.png", "memory.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    with open(out / "merge_ops.csv") as f:
        ops = list(csv.DictReader(f))
    assert set(ops[0]) == {"method", "batch", "N", "D", "time_ms", "time_ms_per_clip", "peak_mb", "peak_mb_per_clip"}
    with open(out / "end_to_end.csv") as f:
        e2e = list(csv.DictReader(f))
    assert {"prefill_ms", "ttft_ms", "decode_tok_s", "kv_mb", "kv_exact", "speedup_vs_ideal", "merge_overhead"} <= set(
        e2e[0]
    )
    assert [r["keep_ratio"] for r in e2e] == ["1.0", "0.5", "0.25"]
    assert "merge_vs_unmerged_prefill" in e2e[0]
    report = (out / "results.md").read_text()
    assert "| method | N=64 ms | N=256 ms |" in report and "time ~ N^k" in report
    assert "speed-up (ideal)" in report and "## Targets" in report
    assert "KV cache after prefill holds exactly text + M tokens: met" in report
    env = json.loads((out / "environment.json").read_text())
    assert {"device", "torch", "transformers", "dtype"} <= set(env)
    assert report.strip() in capsys.readouterr().out


def test_bad_arguments(tmp_path, capsys):
    assert main(["bench", "end-to-end", "--scale", "huge", "--out", str(tmp_path)]) == 2
    assert "--scale must be one of" in capsys.readouterr().err
    assert main(["bench", "end-to-end", "--keep-ratios", "0.5,0.25", "--out", str(tmp_path)]) == 2
    assert "must start with 1.0" in capsys.readouterr().err
