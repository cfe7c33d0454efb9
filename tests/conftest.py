"""Shared test settings: offline hub, deterministic hypothesis runs without deadlines (CI machines are slow)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import logging  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "hf_ltbm",
    deadline=None,
    max_examples=60,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "hf_ltbm"))


def write_clip(path, seconds: float = 1.0, rate: int = 16000, channels: int = 1, freq: float = 440.0):
    """Writes a tone (format from the file ending) and returns its samples `[samples, channels]`."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    data = np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)
    sf.write(str(path), data, rate)
    return data


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_logged_transformers_deprecations(request):
    """transformers announces some deprecations on its logger instead of warning (e.g. reading `.past_key_values`
    of an output on 5.24), once per process: the once-cache is cleared so that every test is checked, and a test
    whose calls log such a notice fails (unless marked `allows_deprecation`)."""
    from transformers.utils import logging as hf_logging

    clear = getattr(hf_logging.warning_once, "cache_clear", None)
    if clear is not None:
        clear()
    handler = _Records()
    library_logger = hf_logging.get_logger("transformers")
    library_logger.addHandler(handler)
    try:
        yield
    finally:
        library_logger.removeHandler(handler)
    notices = [r.getMessage() for r in handler.records if "deprecat" in r.getMessage().lower()]
    if notices and request.node.get_closest_marker("allows_deprecation") is None:
        pytest.fail(f"transformers logged deprecation notices: {sorted(set(notices))}")


#: Test modules whose every test runs a real engine: a vLLM engine, `vllm serve`, or lmms-eval's own entry point.
_ENGINE_MODULES = {
    "tests/integrations/vllm/test_engine.py",
    "tests/integrations/vllm/test_processes.py",
    "tests/integrations/vllm/test_server.py",
    "tests/integrations/vllm/test_readme.py",
    "tests/integrations/lmms_eval/test_plugin.py",
}


def pytest_collection_modifyitems(config, items):
    """Marks the engine tests (`-m "not engine"` deselects them): every test of `_ENGINE_MODULES` and any test that
    takes the vLLM `engines` fixture or serves a model; and transformers' own common model tests (`upstream`)."""
    root = config.rootpath
    for item in items:
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        serves = "vllm_serve" in item.name or "multi_process_engine" in item.name
        if path in _ENGINE_MODULES or "engines" in getattr(item, "fixturenames", ()) or serves:
            item.add_marker(pytest.mark.engine)
        if path.startswith("tests/models/upstream/"):
            item.add_marker(pytest.mark.upstream)
