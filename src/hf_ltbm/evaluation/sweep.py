"""The sweep of an evaluation: its points (`RunSpec`, a merge method with its compression setting, and the name of
its run folder), the grid of them that `hf-ltbm eval` runs (`expand_sweep`), and the folder name of a model
(`model_slug`). `hf_ltbm.evaluation.runner` runs them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import AudioTokenMergeConfig
from ..merging import DEFAULT_WINDOW, available_methods, get_method_class, non_default_options

__all__ = ["PRESERVE_NORM_CHOICES", "SIZE_AWARE_CHOICES", "RunSpec", "expand_sweep", "model_slug"]

#: The values of `expand_sweep`'s `size_aware` (and of `hf-ltbm eval --size-aware`).
SIZE_AWARE_CHOICES = ("off", "on", "both")
#: The values of `expand_sweep`'s `preserve_norm` (and of `hf-ltbm eval --preserve-norm`).
PRESERVE_NORM_CHOICES = SIZE_AWARE_CHOICES
_VARIANTS = {"off": [False], "on": [True], "both": [False, True]}


@dataclass(frozen=True)
class RunSpec:
    """One point of a sweep: a merge method with its compression setting (`method="none"`: no compression)."""

    method: str
    keep_ratio: Optional[float] = None
    window: Optional[int] = None
    size_aware: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    space: str = "encoder"
    key_source: str = "features"
    preserve_norm: bool = False

    def setting(self) -> Optional[AudioTokenMergeConfig]:
        """The merge setting of this point (`None` for no compression); invalid values raise `ValueError`."""
        if self.method == "none":
            return None
        fields: dict[str, Any] = dict(
            method=self.method,
            keep_ratio=self.keep_ratio,
            options=dict(self.options),
            size_aware_attention=self.size_aware,
            preserve_norm=self.preserve_norm,
            space=self.space,
            key_source=self.key_source,
        )
        if self.window is not None:
            fields["window"] = self.window
        if self.method == "random":
            fields["seed"] = 0
        return AudioTokenMergeConfig(**fields)

    def record(self) -> dict[str, Any]:
        """The fields of this point as `metrics.json` records them (what the report tells runs apart by): the run
        folder's name and every field of the spec."""
        return {
            "run": self.name,
            "method": self.method,
            "keep_ratio": self.keep_ratio,
            "window": self.window,
            "size_aware": self.size_aware,
            "preserve_norm": self.preserve_norm,
            "options": dict(self.options),
            "space": self.space,
            "key_source": self.key_source,
        }

    @property
    def name(self) -> str:
        """The run folder's name, e.g. `none`, `ltbm_keep0.5_w4`, `global_keep0.25_sizeaware`, `pool_keep0.5_norm`."""
        if self.method == "none":
            return "none"
        parts = [self.method, f"keep{self.keep_ratio:g}"]
        if self.window is not None:
            parts.append(f"w{self.window}")
        parts += [f"{key}{value}" for key, value in self.options]
        if self.space != "encoder":
            parts.append(self.space)
        if self.key_source != "features":
            parts.append(self.key_source)
        if self.size_aware:
            parts.append("sizeaware")
        if self.preserve_norm:
            parts.append("norm")
        return re.sub(r"[^\w.-]+", "-", "_".join(parts))


def expand_sweep(
    methods: Sequence[str],
    keep_ratios: Sequence[float],
    windows: Optional[Sequence[int]] = None,
    size_aware: str = "off",
    options: Optional[dict[str, Any]] = None,
    *,
    space: str = "encoder",
    key_source: str = "features",
    preserve_norm: str = "off",
) -> list[RunSpec]:
    """The grid of runs: `none` once; every other method at every keep ratio; LTBM also at every window; with
    `size_aware="both"` (or `"on"`) the size-aware variant of each averaging method (pruning keeps sizes 1, so it has
    none); `preserve_norm` likewise adds the norm-preserving variant of each averaging method. `options` go to the
    methods that take them (e.g. `num_segments` for `segment_topk`); `space` applies to
    every method, `key_source` to the methods that compare keys (LTBM, Global Merge)."""
    known = ["none", *available_methods()]
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown} in `methods`; available: {', '.join(known)}.")
    if len(set(methods)) != len(methods):
        raise ValueError(f"`methods` repeats a method: {list(methods)}.")
    if size_aware not in SIZE_AWARE_CHOICES:
        raise ValueError(f"`size_aware` must be one of {SIZE_AWARE_CHOICES}, got {size_aware!r}.")
    if preserve_norm not in PRESERVE_NORM_CHOICES:
        raise ValueError(f"`preserve_norm` must be one of {PRESERVE_NORM_CHOICES}, got {preserve_norm!r}.")
    if any(m != "none" for m in methods) and not keep_ratios:
        raise ValueError("`keep_ratios` is empty; pass e.g. 0.75,0.5,0.25.")
    bad = [r for r in keep_ratios if not 0 < r <= 1]
    if bad:
        raise ValueError(f"Keep ratios must be in (0, 1], got {bad}.")
    if windows and "ltbm" not in methods:
        raise ValueError(f"Windows {list(windows)} were given but 'ltbm' is not among the methods {list(methods)}.")
    windows = list(windows) if windows else [DEFAULT_WINDOW]
    bad_windows = [w for w in windows if not isinstance(w, int) or w < 1]
    if bad_windows:
        raise ValueError(f"Windows must be positive integers, got {bad_windows}.")
    options = dict(options or {})
    used: set[str] = set()
    specs: list[RunSpec] = []
    for method in methods:
        if method == "none":
            specs.append(RunSpec("none"))
            continue
        cls = get_method_class(method)
        accepted = {f for f in getattr(cls, "__dataclass_fields__", {})} - {"window"}
        given = {k: v for k, v in options.items() if k in accepted}
        used.update(given)
        mine = tuple(sorted(non_default_options(method, given).items()))  # at its default: the run without it
        aware_variants = _VARIANTS[size_aware] if cls.averages else [False]
        norm_variants = _VARIANTS[preserve_norm] if cls.averages else [False]
        keys = key_source if method in ("ltbm", "global") else "features"
        for ratio in keep_ratios:
            for window in windows if method == "ltbm" else [None]:
                for aware in aware_variants:
                    for norm in norm_variants:
                        specs.append(RunSpec(method, ratio, window, aware, mine, space, keys, norm))
    unused = sorted(set(options) - used)
    if unused:
        raise ValueError(f"Option(s) {unused} are not options of any of the methods {list(methods)}.")
    for spec in specs:  # validate every point before anything runs
        spec.setting()
    return specs


def model_slug(model: str) -> str:
    """A folder name for a model: a local folder's name, or the hub id with `/` replaced (`Qwen__Qwen2-Audio-...`)."""
    path = Path(model)
    name = path.name if path.exists() else model.replace("/", "__")
    return re.sub(r"[^\w.-]+", "-", name)
