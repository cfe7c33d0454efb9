"""Pictures of merges: the clip (waveform or log-mel) on top, one lane per merge setting below it, where each output
token's frames are drawn as a bar (neighbouring tokens alternate colours; dropped frames stay blank).

Needs matplotlib (`pip install "hf-ltbm[plot]"`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np

from .inspection import MergeMap

__all__ = ["plot_merge_maps"]

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError('Drawing merge maps needs matplotlib: pip install "hf-ltbm[plot]"') from err
    return plt


def plot_merge_maps(
    audio: np.ndarray,
    sampling_rate: int,
    maps: Sequence[MergeMap],
    path: Union[str, os.PathLike],
    *,
    view: str = "mel",
    log_mel: Optional[np.ndarray] = None,
    title: Optional[str] = None,
) -> str:
    """Draws `maps` of one clip under its waveform (`view="waveform"`) or log-mel (`view="mel"`, from `log_mel`
    `[mel_bins, frames]` at 100 frames/s, e.g. the processor's `input_features`) and writes a PNG to `path`.

    Returns the path written.
    """
    if view not in ("mel", "waveform"):
        raise ValueError(f"`view` must be 'mel' or 'waveform', got {view!r}.")
    if view == "mel" and log_mel is None:
        raise ValueError("`view='mel'` needs `log_mel` ([mel_bins, frames] at 100 frames per second).")
    plt = _pyplot()
    duration = len(audio) / sampling_rate
    fig, axes = plt.subplots(
        len(maps) + 1,
        1,
        figsize=(12, 2.2 + 0.55 * len(maps)),
        sharex=True,
        gridspec_kw={"height_ratios": [4] + [1] * len(maps)},
        squeeze=False,
    )
    top = axes[0, 0]
    if view == "mel":
        frames = min(log_mel.shape[1], int(round(duration * 100)))
        top.imshow(log_mel[:, :frames], origin="lower", aspect="auto", extent=(0, frames / 100, 0, log_mel.shape[0]))
        top.set_ylabel("mel bin")
    else:
        t = np.arange(len(audio)) / sampling_rate
        top.plot(t, audio, linewidth=0.4, color="0.2")
        top.set_ylabel("amplitude")
    top.set_title(title or "Which encoder frames each output token stands for")
    for ax, merge_map in zip(axes[1:, 0], maps):
        bars: dict[int, list[tuple[float, float]]] = {}
        for start, end, token in merge_map.segments():
            bars.setdefault(token % len(_COLOURS), []).append((start, end - start))
        for colour, spans in bars.items():
            ax.broken_barh(spans, (0, 1), facecolors=_COLOURS[colour], edgecolor="white", linewidth=0.3)
        ax.set_yticks([])
        ax.set_ylabel(
            f"{merge_map.setting.method}\n{merge_map.tokens_after}/{merge_map.tokens_before}",
            rotation=0,
            ha="right",
            va="center",
            fontsize=8,
        )
    axes[-1, 0].set_xlim(0, duration)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
