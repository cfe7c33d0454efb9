#!/usr/bin/env python
"""Applies `audio_token_merge.patch` to a clean transformers 5.24.0 source tree and runs its tests offline.

The patched transformers is only ever put on `PYTHONPATH` of child processes, in a temporary folder: nothing is
installed, and the current environment's transformers is never touched.

Where the source comes from (the first that works):

1. `--source PATH`: a transformers v5.24.0 source tree (e.g. a git checkout of the `v5.24.0` tag) or an sdist
   tarball;
2. `transformers-5.24.0.tar.gz` in the cache folder (`--cache-dir`, default `$HF_LTBM_UPSTREAM_CACHE` or
   `~/.cache/hf-ltbm/upstream`), checked against its sha256;
3. `pip download transformers==5.24.0 --no-binary :all: --no-deps` into the cache folder (the only network access;
   `--no-download` skips it);
4. the source of the installed `transformers` package, if it is version 5.24.0 (a copy; the library only, no tests).

What the sdist holds: `src/transformers/` and the top-level test harness (`tests/test_modeling_common.py`,
`tests/test_configuration_common.py`, ...), but not `tests/generation/` nor `tests/exporters/` (which
`test_modeling_common.py` imports), no `tests/models/` and no `__init__.py` in `tests/`. The script writes the missing
package files and stand-ins for what is missing (an empty `GenerationTesterMixin` / `ExportTesterMixin`; with the
installed-package fallback also a minimal `test_modeling_common.py` without common tests), and reports which parts
of the harness were real. With a git checkout everything is real, and the upstream modeling tests of the two models
run as well.

Steps: copy the pristine `src/` aside, `git apply` the patch (or `patch -p1`), run the new tests with pytest against
the patched source (`parameterized`, which the real `test_modeling_common.py` needs, is pip-installed into the cache
folder if the environment lacks it), run `check_unchanged.py` (pristine vs patched outputs with merging off, bitwise)
and `crosscheck_hf_ltbm.py` (patched merge vs hf-ltbm's, when hf-ltbm is importable).

Exit status: 0 every step passed, 1 a step failed, 2 no usable transformers 5.24.0 source was found.

    python docs/upstream/apply_and_test.py [--source PATH] [--report report.json] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATCH = HERE / "audio_token_merge.patch"
VERSION = "5.24.0"
SDIST_NAME = f"transformers-{VERSION}.tar.gz"
SDIST_SHA256 = "906cb8c3cb2123575e263962586a4d21a979ce97feeb95fe6aaf66fe6ae88bf3"
NEW_TESTS = [
    "tests/models/qwen2_audio/test_modeling_qwen2_audio_token_merge.py",
    "tests/models/qwen2_audio/test_processing_qwen2_audio_token_merge.py",
    "tests/models/audioflamingo3/test_modeling_audioflamingo3_token_merge.py",
    "tests/models/audioflamingo3/test_processing_audioflamingo3_token_merge.py",
]
# Upstream modeling tests of the two models (in a git checkout only; they need no download)
UPSTREAM_TESTS = [
    "tests/models/qwen2_audio/test_modeling_qwen2_audio.py",
    "tests/models/audioflamingo3/test_modeling_audioflamingo3.py",
]
NO_SOURCE = 2

_GENERATION_STANDIN = """\
\"\"\"Stand-in written by hf-ltbm's apply_and_test.py: the transformers sdist does not ship `tests/generation/`,
so the generation tests of the real `GenerationTesterMixin` do not run here (they do against a git checkout).\"\"\"


class GenerationTesterMixin:
    pass
"""

_EXPORT_STANDIN = """\
\"\"\"Stand-in written by hf-ltbm's apply_and_test.py: the transformers sdist does not ship `tests/exporters/`.\"\"\"


class ExportTesterMixin:
    pass
"""

_MODELING_COMMON_STANDIN = """\
\"\"\"Stand-in written by hf-ltbm's apply_and_test.py: this source tree has no test harness (the installed
package was used), so the common model tests do not run; only the helpers the new tests use are provided.\"\"\"

import random

import torch

from transformers.testing_utils import torch_device


class ModelTesterMixin:
    pass


def ids_tensor(shape, vocab_size, rng=None, name=None):
    rng = rng or random.Random()
    values = [rng.randint(0, vocab_size - 1) for _ in range(int(torch.Size(shape).numel()))]
    return torch.tensor(values, dtype=torch.long, device=torch_device).view(shape).contiguous()


def floats_tensor(shape, scale=1.0, rng=None, name=None):
    rng = rng or random.Random()
    values = [rng.random() * scale for _ in range(int(torch.Size(shape).numel()))]
    return torch.tensor(values, dtype=torch.float, device=torch_device).view(shape).contiguous()
"""

# Test-harness files the new tests import, written only where the source tree lacks them
STANDINS = {
    "tests/generation/test_utils.py": _GENERATION_STANDIN,
    "tests/exporters/test_export.py": _EXPORT_STANDIN,
    "tests/test_modeling_common.py": _MODELING_COMMON_STANDIN,
}


class NoSource(Exception):
    pass


def log(message: str) -> None:
    print(f"[apply_and_test] {message}", flush=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: offline hub, no inherited PYTHONPATH, no bytecode in the trees."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1", PIP_NO_INPUT="1")
    env.update(extra)
    return env


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 900):
    return subprocess.run(
        cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ------------------------------------------------------------------------------------------------------ the source
def extract_sdist(tarball: Path, target: Path) -> None:
    """Extracts the sdist's single top folder into `target` (members outside it, links and devices refused)."""
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
        top = f"transformers-{VERSION}/"
        for member in members:
            name = member.name
            if not name.startswith(top) and name != top.rstrip("/"):
                raise NoSource(f"{tarball} is not a transformers {VERSION} sdist (member {name!r})")
            if name.startswith("/") or ".." in Path(name).parts or not (member.isfile() or member.isdir()):
                raise NoSource(f"{tarball} holds an unsafe member {name!r}")
        for member in members:
            relative = member.name[len(top) :]
            if not relative or member.isdir():
                continue
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink)


def cached_or_downloaded_sdist(cache: Path, download: bool) -> Path | None:
    tarball = cache / SDIST_NAME
    if tarball.is_file():
        if sha256(tarball) == SDIST_SHA256:
            return tarball
        log(f"cached {tarball} has the wrong sha256: removing it")
        tarball.unlink()
    if not download:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    log(f"downloading the transformers {VERSION} sdist with pip into {cache}")
    result = run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"transformers=={VERSION}",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--disable-pip-version-check",
            "--dest",
            str(cache),
        ],
        timeout=600,
    )
    if result.returncode != 0 or not tarball.is_file():
        log(f"pip download failed (exit {result.returncode}):\n{tail(result.stdout + result.stderr, 15)}")
        return None
    if sha256(tarball) != SDIST_SHA256:
        log(f"downloaded {tarball} has an unexpected sha256: not using it")
        return None
    return tarball


def installed_package() -> Path | None:
    """The folder of the installed transformers package, if it is version 5.24.0."""
    probe = (
        "import importlib.metadata as m, importlib.util as u\n"
        "spec = u.find_spec('transformers')\n"
        "print(m.version('transformers')); print(list(spec.submodule_search_locations)[0])\n"
    )
    result = run([sys.executable, "-c", probe], timeout=120)
    if result.returncode != 0:
        return None
    version, location = result.stdout.split()[:2]
    if version != VERSION:
        log(f"the installed transformers is {version}, not {VERSION}: not usable")
        return None
    return Path(location)


def obtain_source(args: argparse.Namespace, tree: Path) -> tuple[str, str]:
    """Fills `tree` with a clean transformers 5.24.0 source; returns (kind, where from)."""
    if args.source:
        source = Path(args.source).expanduser().resolve()
        if source.is_file():
            extract_sdist(source, tree)
            return "sdist", str(source)
        if (source / "src" / "transformers").is_dir():
            shutil.copytree(
                source, tree, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc"), dirs_exist_ok=True
            )
            return "source tree", str(source)
        raise NoSource(f"--source {source} is neither an sdist tarball nor a source tree with src/transformers")
    tarball = cached_or_downloaded_sdist(Path(args.cache_dir).expanduser(), download=not args.no_download)
    if tarball is not None:
        extract_sdist(tarball, tree)
        return "sdist", str(tarball)
    package = installed_package()
    if package is not None:
        shutil.copytree(package, tree / "src" / "transformers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (tree / "tests").mkdir()
        return "installed package", str(package)
    raise NoSource(
        f"no transformers {VERSION} source: no --source, no cached or downloadable sdist, and the installed "
        "package is missing or another version"
    )


# ---------------------------------------------------------------------------------------------------- the steps
def apply_patch(tree: Path) -> None:
    # Stop git from discovering a repository around the temporary folder: the patch applies to `tree` alone.
    env = clean_env(GIT_CEILING_DIRECTORIES=str(tree.parent))
    if shutil.which("git"):
        commands = [["git", "apply", "--check", str(PATCH)], ["git", "apply", str(PATCH)]]
    elif shutil.which("patch"):
        commands = [
            ["patch", "-p1", "--dry-run", "--forward", "-i", str(PATCH)],
            ["patch", "-p1", "--forward", "-i", str(PATCH)],
        ]
    else:
        raise RuntimeError("neither git nor patch is available to apply the patch")
    for command in commands:
        result = run(command, cwd=tree, env=env, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(command[:2])}` failed:\n{tail(result.stdout + result.stderr)}")


def prepare_harness(tree: Path, cache: Path) -> tuple[dict[str, str], list[Path]]:
    """Adds the test package files and stand-ins the tree lacks; returns (harness report, extra import paths)."""
    for folder in ("tests", "tests/models", "tests/models/qwen2_audio", "tests/models/audioflamingo3"):
        init = tree / folder / "__init__.py"
        if not init.exists():
            init.write_text("")
    harness = {}
    for relative, text in STANDINS.items():
        path = tree / relative
        if path.exists():
            harness[relative] = "real"
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent != tree / "tests" and not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").write_text("")
        path.write_text(text)
        harness[relative] = "stand-in"

    extra_paths = []
    if harness["tests/test_modeling_common.py"] == "real":
        if run([sys.executable, "-c", "import parameterized"], timeout=60).returncode != 0:
            deps = cache / f"deps-py{sys.version_info.major}{sys.version_info.minor}"
            if not (deps / "parameterized").is_dir():
                log(f"installing `parameterized` (needed by test_modeling_common.py) into {deps}")
                result = run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "--target",
                        str(deps),
                        "parameterized",
                    ],
                    timeout=300,
                )
                if result.returncode != 0:
                    raise RuntimeError(f"cannot install `parameterized`:\n{tail(result.stdout + result.stderr)}")
            extra_paths.append(deps)
    return harness, extra_paths


def check_import(tree: Path, env: dict[str, str]) -> None:
    result = run([sys.executable, "-c", "import transformers; print(transformers.__file__)"], cwd=tree, env=env)
    location = Path(result.stdout.strip() or "?").resolve()
    if result.returncode != 0 or tree.resolve() not in location.parents:
        raise RuntimeError(f"the patched transformers is not the one imported ({location}):\n{tail(result.stderr)}")


def run_pytest(tree: Path, env: dict[str, str], extra: list[str]) -> dict:
    tests = NEW_TESTS + [t for t in UPSTREAM_TESTS if (tree / t).is_file()]
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "log_cli=false",
        "-W",
        "ignore::pytest.PytestUnknownMarkWarning",
        *extra,
        *tests,
    ]
    log(f"pytest {' '.join(tests)}")
    result = run(command, cwd=tree, env=env, timeout=1800)
    output = result.stdout + result.stderr
    print(tail(output, 200 if result.returncode else 5), flush=True)
    # pytest's own summary line, e.g. "255 passed, 99 skipped, 1 warning, 1515 subtests passed in 23.40s"
    summary = next((line for line in reversed(output.splitlines()) if re.search(r"\d+ (passed|failed)", line)), "")
    counts = {
        key: sum(int(n) for n in re.findall(rf"(\d+) {word}\b", re.sub(r"\d+ subtests \w+", "", summary)))
        for key, word in (("passed", "passed"), ("failed", "failed"), ("errors", "errors?"), ("skipped", "skipped"))
    }
    counts.update(summary=summary.strip(" ="), exit_status=result.returncode, files=tests)
    return counts


def run_script(name: str, args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    result = run([sys.executable, str(HERE / name), *args], cwd=cwd, env=env, timeout=900)
    output = (result.stdout + result.stderr).strip()
    print(tail(output, 60 if result.returncode else 8), flush=True)
    return result.returncode, output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="a transformers 5.24.0 source tree or sdist tarball (skips the download)")
    parser.add_argument(
        "--cache-dir",
        default=os.environ.get("HF_LTBM_UPSTREAM_CACHE") or str(Path.home() / ".cache" / "hf-ltbm" / "upstream"),
        help="where the sdist and helper packages are cached (default: %(default)s)",
    )
    parser.add_argument("--no-download", action="store_true", help="never use the network")
    parser.add_argument("--workdir", help="work here instead of a new temporary folder (must not exist yet)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (patched tree) afterwards")
    parser.add_argument("--report", help="write a JSON summary of every step to this file")
    parser.add_argument("--skip-checks", action="store_true", help="run only the tests (no unchanged/cross checks)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after `--`)")
    args = parser.parse_args()

    started = time.monotonic()
    if args.workdir:
        workdir = Path(args.workdir).expanduser().resolve()
        workdir.mkdir(parents=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="hf-ltbm-upstream-"))
    cache = Path(args.cache_dir).expanduser()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:  # e.g. a read-only home: cache in the temporary folder's parent instead
        cache = Path(tempfile.gettempdir()) / "hf-ltbm-upstream-cache"
        cache.mkdir(parents=True, exist_ok=True)
    args.cache_dir = str(cache)
    tree, pristine = workdir / "transformers", workdir / "pristine"
    report: dict = {"transformers_version": VERSION, "patch": str(PATCH), "workdir": str(workdir)}
    status = 1
    try:
        tree.mkdir()
        report["source"], report["source_from"] = obtain_source(args, tree)
        log(f"source: {report['source']} ({report['source_from']})")
        shutil.copytree(tree / "src", pristine / "src")

        apply_patch(tree)
        report["apply"] = "ok"
        log("patch applied")

        report["harness"], extra_paths = prepare_harness(tree, cache)
        log("harness: " + ", ".join(f"{name} {kind}" for name, kind in report["harness"].items()))
        patched_env = clean_env(PYTHONPATH=os.pathsep.join(str(p) for p in [tree / "src", *extra_paths]))
        check_import(tree, patched_env)

        report["pytest"] = run_pytest(tree, patched_env, args.pytest_args)
        ok = report["pytest"]["exit_status"] == 0 and report["pytest"]["passed"] > 0

        if not args.skip_checks:
            log("check_unchanged.py: outputs with audio_token_merge unset, pristine vs patched")
            reference = workdir / "unchanged-reference.pt"
            pristine_env = clean_env(PYTHONPATH=str(pristine / "src"))
            code, _ = run_script("check_unchanged.py", ["save", str(reference)], pristine_env, workdir)
            if code == 0:
                code, _ = run_script("check_unchanged.py", ["compare", str(reference)], patched_env, workdir)
            report["unchanged"] = "passed" if code == 0 else "failed"

            log("crosscheck_hf_ltbm.py: the patched merge vs hf-ltbm's")
            code, output = run_script("crosscheck_hf_ltbm.py", [], patched_env, workdir)
            report["crosscheck_hf_ltbm"] = "failed" if code else ("skipped" if "SKIPPED" in output else "passed")
            ok = ok and report["unchanged"] == "passed" and report["crosscheck_hf_ltbm"] != "failed"
        status = 0 if ok else 1
    except NoSource as error:
        log(str(error))
        report["error"] = str(error)
        status = NO_SOURCE
    except Exception as error:  # a failed step: report it and exit 1
        log(f"FAILED: {error}")
        report["error"] = str(error)
    finally:
        report["seconds"] = round(time.monotonic() - started, 1)
        report["status"] = {0: "passed", 1: "failed", NO_SOURCE: "no source"}[status]
        if args.report:
            Path(args.report).write_text(json.dumps(report, indent=2))
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"{report['status']} in {report['seconds']} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
