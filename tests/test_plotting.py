import numpy as np
import pytest
import torch

from hf_ltbm import AudioTokenMergeConfig
from hf_ltbm.inspection import MergeMap
from hf_ltbm.plotting import plot_merge_maps


def maps():
    a = torch.arange(50) // 2
    return [MergeMap(AudioTokenMergeConfig(method="pool"), [a], 0.04, 30.0)]


def test_writes_a_png(tmp_path):
    audio = np.sin(np.arange(32000) / 10).astype(np.float32)
    path = plot_merge_maps(audio, 16000, maps(), tmp_path / "a.png", view="waveform")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.endswith("a.png")
    plot_merge_maps(audio, 16000, maps(), tmp_path / "b.png", log_mel=np.random.rand(128, 3000))
    assert (tmp_path / "b.png").stat().st_size > 5000


def test_bad_view(tmp_path):
    with pytest.raises(ValueError, match="`view` must be 'mel' or 'waveform', got 'x'"):
        plot_merge_maps(np.zeros(10), 16000, maps(), tmp_path / "a.png", view="x")
    with pytest.raises(ValueError, match="needs `log_mel`"):
        plot_merge_maps(np.zeros(10), 16000, maps(), tmp_path / "a.png")
