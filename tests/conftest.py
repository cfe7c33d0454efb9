"""Shared test settings: offline hub, deterministic hypothesis runs without deadlines (CI machines are slow)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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
