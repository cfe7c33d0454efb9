import csv
import json
import re
from pathlib import Path

import pytest

from hf_ltbm.evaluation.report import collect_runs, markdown, tidy_rows, wide_rows, write_report


def write_run(root, model, task, run, method, metrics, keep=None, window=None, size_aware=False, unavailable=None):
    path = root / model.replace("/", "__") / task / run
    path.mkdir(parents=True)
    efficiency = {
        "audio_tokens_kept": keep or 1.0,
        "prefill_s_per_item": 0.01 * (keep or 1.0),
        "peak_memory_bytes_max": 2**20,
    }
    data = {
        "model": model,
        "task": task,
        "run": run,
        "method": method,
        "keep_ratio": keep,
        "window": window,
        "size_aware": size_aware,
        "options": {},
        "metrics": metrics,
        "unavailable": unavailable or {},
        "efficiency": efficiency,
    }
    (path / "metrics.json").write_text(json.dumps(data))
    return path


@pytest.fixture
def runs_dir(tmp_path):
    spice = {"SPICE": "CoreNLP missing", "SPIDEr": "needs SPICE"}
    m = "org/model"
    write_run(tmp_path, m, "clotho", "none", "none", {"CIDEr-D": 0.40, "METEOR": 0.20}, unavailable=spice)
    write_run(tmp_path, m, "clotho", "ltbm_keep0.5_w3", "ltbm", {"CIDEr-D": 0.38, "METEOR": 0.19}, 0.5, 3)
    write_run(tmp_path, m, "clotho", "ltbm_keep0.25_w3", "ltbm", {"CIDEr-D": 0.30, "METEOR": 0.18}, 0.25, 3)
    write_run(tmp_path, m, "clotho", "global_keep0.5", "global", {"CIDEr-D": 0.36, "METEOR": 0.19}, 0.5)
    write_run(
        tmp_path, m, "clotho", "global_keep0.5_sizeaware", "global", {"CIDEr-D": 0.37, "METEOR": 0.2}, 0.5, None, True
    )
    write_run(tmp_path, m, "mmau", "none", "none", {"accuracy": 50.0, "accuracy/sound": 60.0})
    write_run(tmp_path, m, "mmau", "ltbm_keep0.5_w3", "ltbm", {"accuracy": 45.0, "accuracy/sound": 66.0}, 0.5, 3)
    (tmp_path / "org__model" / "mmau" / "unfinished").mkdir()  # no metrics.json: not a finished run
    return tmp_path


def test_collect_runs_reads_finished_runs(runs_dir):
    runs = collect_runs(runs_dir)
    assert len(runs) == 7
    assert runs[0].method == "none"  # the uncompressed runs first
    ltbm = next(r for r in runs if r.name == "ltbm_keep0.5_w3" and r.task == "clotho")
    assert ltbm.setting == "keep 0.5, w 3" and ltbm.series == "ltbm (w=3)"
    assert ltbm.metrics["audio_tokens_kept"] == 0.5 and ltbm.metrics["peak_memory_mb"] == 1.0
    aware = next(r for r in runs if r.size_aware)
    assert aware.setting == "keep 0.5, size-aware" and aware.series == "global + size-aware"


def test_tidy_rows_relative_change_vs_none(runs_dir):
    rows = tidy_rows(collect_runs(runs_dir))

    def row(task, run, metric):
        (found,) = [r for r in rows if (r["task"], r["run"], r["metric"]) == (task, run, metric)]
        return found

    assert row("clotho", "ltbm_keep0.25_w3", "CIDEr-D")["relative_change_vs_none"] == pytest.approx(-0.25)
    assert row("clotho", "none", "CIDEr-D")["relative_change_vs_none"] == pytest.approx(0.0)
    assert row("mmau", "ltbm_keep0.5_w3", "accuracy")["relative_change_vs_none"] == pytest.approx(-0.1)
    assert row("mmau", "ltbm_keep0.5_w3", "accuracy/sound")["relative_change_vs_none"] == pytest.approx(0.1)
    assert row("clotho", "global_keep0.5", "CIDEr-D")["keep_ratio"] == 0.5
    assert row("clotho", "none", "CIDEr-D")["keep_ratio"] == 1.0


def test_wide_rows_one_row_per_method_and_setting(runs_dir):
    rows = wide_rows(collect_runs(runs_dir))
    assert [(r["method"], r["setting"]) for r in rows] == [
        ("none", "-"),
        ("global", "keep 0.5"),
        ("global", "keep 0.5, size-aware"),
        ("ltbm", "keep 0.5, w 3"),
        ("ltbm", "keep 0.25, w 3"),
    ]
    assert list(rows[0])[:7] == ["model", "method", "setting", "keep_ratio", "window", "size_aware", "options"]
    assert rows[2]["size_aware"] is True and rows[3]["window"] == 3
    ltbm = rows[3]
    assert ltbm["clotho/CIDEr-D"] == 0.38 and ltbm["mmau/accuracy"] == 45.0
    assert ltbm["clotho/CIDEr-D rel"] == pytest.approx(-0.05)
    assert rows[4]["mmau/accuracy"] is None  # not run at that setting


def test_markdown_summary_and_unavailable_reasons(runs_dir):
    text = markdown(collect_runs(runs_dir))
    assert "## org/model" in text
    assert "| method | setting | clotho CIDEr-D | mmau accuracy |" in text
    assert "| ltbm | keep 0.5, w 3 | 0.3800 (-5.0%) | 45.00 (-10.0%) |" in text
    assert "| none | - | 0.4000 | 50.00 |" in text
    assert "- SPICE unavailable: CoreNLP missing" in text
    assert "### org/model: mmau" in text


def test_tiny_values_are_not_shown_as_zero_beside_a_percentage(tmp_path):
    write_run(tmp_path, "m", "clotho", "none", "none", {"BLEU-4": 2.0e-17})
    write_run(tmp_path, "m", "clotho", "pool_keep0.5", "pool", {"BLEU-4": 2.2e-17}, 0.5)
    assert "| pool | keep 0.5 | 2.2e-17 (+10.0%) |" in markdown(collect_runs(tmp_path))


def test_mmau_groups_are_ordered_tasks_then_difficulties(tmp_path):
    groups = {f"accuracy/{g}": 1.0 for g in ("easy", "hard", "medium", "music", "sound", "speech")}
    write_run(tmp_path, "m", "mmau", "none", "none", {"accuracy": 1.0, **groups})
    header = next(line for line in markdown(collect_runs(tmp_path)).splitlines() if "accuracy/sound" in line)
    names = [c.strip() for c in header.split("|")[3:-1]]
    assert names[:7] == [
        "accuracy",
        *[f"accuracy/{g}" for g in ("sound", "music", "speech", "easy", "medium", "hard")],
    ]


def test_write_report_files_and_plot(runs_dir, tmp_path):
    out = tmp_path / "report"
    written = write_report(runs_dir, out)
    assert written["markdown"].read_text().startswith("# Evaluation results")
    with open(written["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert set(rows[0]) == {
        "model", "task", "run", "method", "keep_ratio", "window", "size_aware", "options", "space", "key_source",
        "preserve_norm", "metric", "value", "relative_change_vs_none",
    }  # fmt: skip
    assert len(rows) == sum(len(r.metrics) for r in collect_runs(runs_dir))
    plot = written["plot0"]
    assert plot.name == "org_model_metric_vs_keep_ratio.png" and plot.stat().st_size > 10_000
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        collect_runs(tmp_path / "nope")
    with pytest.raises(ValueError, match="No finished runs"):
        collect_runs(tmp_path)


def test_space_and_key_source_variants_are_separate_rows_and_series(tmp_path):
    """Runs that differ only in --space or --key-source sit side by side in one --out: each is its own row and plot
    series (before, the report folded them into one and the last run won)."""
    m = "org/model"
    write_run(tmp_path, m, "clotho", "none", "none", {"CIDEr-D": 0.40})
    plain = write_run(tmp_path, m, "clotho", "ltbm_keep0.5_w3", "ltbm", {"CIDEr-D": 0.38}, 0.5, 3)
    projector = write_run(tmp_path, m, "clotho", "ltbm_keep0.5_w3_projector", "ltbm", {"CIDEr-D": 0.30}, 0.5, 3)
    keys = write_run(tmp_path, m, "clotho", "ltbm_keep0.5_w3_encoder_keys", "ltbm", {"CIDEr-D": 0.20}, 0.5, 3)
    for path, extra in ((projector, {"space": "projector"}), (keys, {"key_source": "encoder_keys"})):
        data = json.loads((path / "metrics.json").read_text())
        (path / "metrics.json").write_text(json.dumps({**data, **extra}))
    # a run written before metrics.json recorded the variant: read from its config.json
    (plain / "config.json").write_text(
        json.dumps({"audio_token_merge": {"space": "encoder", "key_source": "features"}})
    )
    runs = collect_runs(tmp_path)
    assert len({run.identity for run in runs}) == 4
    assert sorted(run.series for run in runs if run.method == "ltbm") == [
        "ltbm (w=3)",
        "ltbm (w=3) keys=encoder_keys",
        "ltbm (w=3) space=projector",
    ]
    wide = [row for row in wide_rows(runs) if row["method"] == "ltbm"]
    assert sorted(row["clotho/CIDEr-D"] for row in wide) == [0.20, 0.30, 0.38]
    assert {row["setting"] for row in wide} == {
        "keep 0.5, w 3",
        "keep 0.5, w 3, space=projector",
        "keep 0.5, w 3, keys=encoder_keys",
    }
    text = markdown(runs)
    assert "space=projector" in text and "keys=encoder_keys" in text and "0.3000" in text and "0.2000" in text


# --------------------------------------------------------------------------------------------- property-based tests
import dataclasses  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hf_ltbm.evaluation.runner import RunSpec  # noqa: E402

#: A strategy for every field of RunSpec; a field added to RunSpec fails test_the_strategy_covers_every_field until
#: it is drawn here too, so that the property below covers it.
_SPEC_FIELDS = {
    "method": st.sampled_from(["ltbm", "global", "pool", "prune_norm", "segment_topk", "random"]),
    "keep_ratio": st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]) | st.floats(0.01, 1.0),
    "window": st.none() | st.integers(1, 16),
    "size_aware": st.booleans(),
    "options": st.sampled_from([(), (("num_segments", 4),), (("num_segments", 10),), (("seed_offset", 1),)]),
    "space": st.sampled_from(["encoder", "projector"]),
    "key_source": st.sampled_from(["features", "encoder_keys"]),
    "preserve_norm": st.booleans(),
}


@st.composite
def neighbouring_specs(draw):
    """A spec and variants of it that differ in one field each (and `none`): the pairs a report must tell apart."""
    base = draw(st.builds(RunSpec, **_SPEC_FIELDS))
    fields = draw(st.lists(st.sampled_from(sorted(_SPEC_FIELDS)), min_size=1, max_size=8))
    specs = [base, RunSpec("none")] + [dataclasses.replace(base, **{f: draw(_SPEC_FIELDS[f])}) for f in fields]
    return list({spec.name: spec for spec in specs}.values())  # one spec per folder


def test_the_strategy_covers_every_field():
    assert set(_SPEC_FIELDS) == {f.name for f in dataclasses.fields(RunSpec)}


@given(specs=neighbouring_specs())
def test_every_field_that_makes_a_run_folder_distinct_is_part_of_its_identity(tmp_path_factory, specs):
    """Runs in distinct folders (one task, one model; folder names from RunSpec.name, metrics.json from
    RunSpec.record as the runner writes them) are distinct rows of the report and never share a point of a plot
    series; each run reads back the fields of its spec."""
    root = tmp_path_factory.mktemp("runs")
    for i, spec in enumerate(specs):
        path = root / "org__model" / "clotho" / spec.name
        path.mkdir(parents=True)
        data = {"model": "org/model", "task": "clotho", **spec.record(), "metrics": {"CIDEr-D": i / 10}}
        (path / "metrics.json").write_text(json.dumps({**data, "unavailable": {}, "efficiency": {}}))
    runs = collect_runs(root)
    assert len(runs) == len(specs)
    assert len({run.identity for run in runs}) == len(specs)
    assert len(wide_rows(runs)) == len(specs)
    assert len({(run.series, run.keep_ratio) for run in runs}) == len(specs)  # one point per line and keep ratio
    by_name = {spec.name: spec for spec in specs}
    for run in runs:
        spec = by_name[run.name]
        assert (run.method, run.keep_ratio, run.window, run.size_aware, run.space, run.key_source) == (
            spec.method,
            spec.keep_ratio,
            spec.window,
            spec.size_aware,
            spec.space,
            spec.key_source,
        )
        assert run.preserve_norm == spec.preserve_norm
        assert run.options == dict(spec.options)
        assert run.metrics["CIDEr-D"] == specs.index(spec) / 10


def _documented_columns(name: str) -> list[str]:
    """The columns docs/reproduce.md lists, in order, for the report file `name` (the backticked names after "Its
    columns, in order:" in its bullet, up to the sentence's end or ", then")."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "reproduce.md").read_text(encoding="utf-8")
    bullet = re.search(rf"^- `{re.escape(name)}`(.*?)(?=^- |\Z)", text, flags=re.M | re.S).group(1)
    listed = re.search(r"Its columns, in order:(.*?)(?:, then|\.\s)", " ".join(bullet.split()), flags=re.S).group(1)
    return re.findall(r"`([^`]+)`", listed)


def test_the_report_files_have_the_columns_docs_reproduce_lists_in_that_order(runs_dir, tmp_path):
    written = write_report(runs_dir, tmp_path / "report")
    with open(written["csv"]) as handle:
        assert next(csv.reader(handle)) == _documented_columns("results.csv")
    with open(written["wide_csv"]) as handle:
        header = next(csv.reader(handle))
    identifying = _documented_columns("results_wide.csv")
    assert header[: len(identifying)] == identifying
    pairs = header[len(identifying) :]  # then `<task>/<metric>` and `<task>/<metric> rel`, pair by pair
    assert pairs and pairs[0::2] == [column.removesuffix(" rel") for column in pairs[1::2]]
    assert all(re.fullmatch(r"[\w-]+/[\w/.-]+", column) for column in pairs[0::2])
    assert all(column.endswith(" rel") for column in pairs[1::2])
