"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`), taken from the installed release's sdist.

The sdist of every release carries `tests/test_modeling_common.py` and `tests/test_configuration_common.py`, but not
the folders they import from (`tests/generation/`, `tests/exporters/`, `tests/utils/`). `load()` fetches the sdist of
the installed transformers once (`pip download --no-binary :all: --no-deps`, the only network access), caches it
(`$HF_LTBM_UPSTREAM_CACHE`, default `~/.cache/hf-ltbm/upstream`, shared with `docs/upstream/apply_and_test.py`), and
builds an importable package `transformers_tests_<version>` from the two files plus three stand-ins:

- `generation.test_utils.GenerationTesterMixin`: an empty class (the generation paths it walks are covered by
  `tests/models/test_generation_parity.py`);
- `exporters.test_export.ExportTesterMixin`: an empty class (no export tests);
- `utils.test_configuration_utils.config_common_kwargs`: an empty dict; `ConfigTester` reads it only for configs
  without sub-configs, and every audio-language config has sub-configs.

Where the sdist can be neither found in the cache nor downloaded, the suite is skipped, except with
`HF_LTBM_REQUIRE_UPSTREAM_TESTS=1` (CI), where that is an error.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import transformers

__all__ = ["UpstreamTestsUnavailable", "cache_dir", "load"]

_FILES = ("test_modeling_common.py", "test_configuration_common.py")
_STANDINS = {
    "__init__.py": "",
    "generation/__init__.py": "",
    "generation/test_utils.py": (
        '"""Stand-in: the sdist has no tests/generation/ (hf-ltbm walks those paths in its own parity tests)."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "exporters/__init__.py": "",
    "exporters/test_export.py": (
        '"""Stand-in: the sdist has no tests/exporters/."""\n\n\nclass ExportTesterMixin:\n    pass\n'
    ),
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": (
        '"""Stand-in: the sdist has no tests/utils/; ConfigTester reads this only for configs without sub-configs."""'
        "\n\nconfig_common_kwargs = {}\n"
    ),
}


class UpstreamTestsUnavailable(RuntimeError):
    """The installed release's sdist could not be found in the cache nor downloaded."""


def cache_dir() -> Path:
    return Path(os.environ.get("HF_LTBM_UPSTREAM_CACHE") or Path.home() / ".cache" / "hf-ltbm" / "upstream")


def _sdist(version: str, cache: Path) -> Path:
    tarball = cache / f"transformers-{version}.tar.gz"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-binary", ":all:"]
    command += ["--no-deps", "--disable-pip-version-check", "--dest", str(cache)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0 or not tarball.is_file():
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
        raise UpstreamTestsUnavailable(
            f"no sdist of transformers {version} in {cache}, and pip download failed:\n{output}"
        )
    return tarball


def _build(version: str, package: Path) -> None:
    """Writes the two harness files of the sdist and the stand-ins into `package` (atomically: a folder that exists
    is complete)."""
    staging = package.with_name(package.name + f".tmp{os.getpid()}")
    with tarfile.open(_sdist(version, package.parent)) as archive:
        for name in _FILES:
            member = archive.getmember(f"transformers-{version}/tests/{name}")
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())
    for name, text in _STANDINS.items():
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    try:
        staging.rename(package)
    except OSError:  # another process built it first
        if not package.is_dir():
            raise


def load() -> tuple[ModuleType, ModuleType]:
    """`(test_modeling_common, test_configuration_common)` of the installed transformers release."""
    version = transformers.__version__
    name = "transformers_tests_" + version.replace(".", "_").replace("-", "_")
    root = cache_dir()
    package = root / name
    if not package.is_dir():
        _build(version, package)
    if str(root) not in sys.path:
        sys.path.append(str(root))
    modeling = importlib.import_module(f"{name}.test_modeling_common")
    configuration = importlib.import_module(f"{name}.test_configuration_common")
    return modeling, configuration
