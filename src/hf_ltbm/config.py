"""`AudioTokenMergeConfig`: the audio-token merge setting of a model, validated once and stored as a plain dict."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

from . import merging  # a lazy package: the methods (and torch) are imported when a setting is first built

if TYPE_CHECKING:
    import torch

    from .merging import MergeResult, TokenReducer

__all__ = ["DEFAULT_KEEP_RATIO", "KEY_SOURCES", "MERGE_SPACES", "AudioTokenMergeConfig", "MergeSetting"]

#: Keep ratio used when neither `keep_ratio` nor `num_tokens` is given.
DEFAULT_KEEP_RATIO = 0.5
#: Where the merge runs: on the audio encoder's output before the multi-modal projector, or after it.
MERGE_SPACES = ("encoder", "projector")
#: What the merging methods compare: the audio encoder's output features (after its final pooling and LayerNorm),
#: or the keys of the encoder's last self-attention layer (averaged over heads and pooled to the token rate).
KEY_SOURCES = ("features", "encoder_keys")


@dataclass(frozen=True)
class AudioTokenMergeConfig:
    """How an audio-language model compresses its audio tokens.

    Fields mirror :func:`~hf_ltbm.merge_tokens`' arguments; the model classes apply the setting per clip
    (Audio Flamingo 3: per 30 s window). Instances are immutable and validated on construction; use
    `dataclasses.replace(config, keep_ratio=0.25)` for a variant. The model config stores :meth:`to_dict` under
    `config.audio_token_merge`, so it round-trips through `save_pretrained`/`from_pretrained`.

    Args:
        method (`str`, defaults to `"ltbm"`): a registered method (see :func:`~hf_ltbm.available_methods`).
        keep_ratio (`float`, *optional*): fraction of audio tokens kept, in (0, 1]. Defaults to
            `DEFAULT_KEEP_RATIO` (0.5) when `num_tokens` is not set either.
        num_tokens (`int`, *optional*): token budget (>= 1) instead of a ratio, per audio unit: per clip for
            Qwen2-Audio, per 30 s window for Audio Flamingo 3 (a 90 s clip gets up to `3 * num_tokens`).
        window (`int`, *optional*): LTBM's window in slots of the current sequence; `None` resolves to
            `DEFAULT_WINDOW` for `"ltbm"` and must stay `None` for every other method.
        seed (`int`, *optional*): seeds a fresh `torch.Generator` at every merge for the random methods, so the
            same clip is always reduced the same way; `None` draws from PyTorch's global generator.
        options (`dict`, *optional*): further options of the method (e.g. `{"num_segments": 10}` for
            `"segment_topk"`).
        space (`str`, defaults to `"encoder"`): `"encoder"` merges the encoder output `[U, T, D_audio]` before the
            projector, `"projector"` merges the projected tokens `[U, T, D_text]`. Merge keys and attention scores
            come from the encoder in both spaces, so on Qwen2-Audio (one Linear projector, which commutes with
            averaging) every method except norm-based pruning gives the same tokens in both spaces, up to float
            rounding; norm-based pruning ranks by the norm of the tokens in the chosen space. On Audio Flamingo 3
            (Linear-GELU-Linear) the spaces differ for every averaging method.
        key_source (`str`, defaults to `"features"`): what the merging methods compare, one of `KEY_SOURCES`:
            `"features"` is the encoder output `[U, T, D_audio]` (also in projector space), `"encoder_keys"` the
            last encoder layer's attention keys averaged over heads and pooled to the token rate
            `[U, T, D_audio / num_heads]`. Only for methods that compare keys (`"ltbm"`, `"global"`).
        size_aware_attention (`bool`, defaults to `False`): the language model adds `log(size)` to the attention
            logits of every merged audio key (for every query, in prefill and decoding), the attention that `size`
            identical copies of the key would get. No effect on pruning methods (every size is 1). Needs the
            "sdpa" or "eager" attention implementation.
        preserve_norm (`bool`, defaults to `False`): a merged token keeps the mean norm of the tokens it stands for
            (their size-weighted mean is rescaled to it, `hf_ltbm.merge_tokens`); plain averaging shrinks it. Only for
            methods that average; a pruning method refuses it. Left out of `to_dict` at its default, so that a
            setting without it is stored exactly as before the option existed.
    """

    method: str = "ltbm"
    keep_ratio: Optional[float] = None
    num_tokens: Optional[int] = None
    window: Optional[int] = None
    seed: Optional[int] = None
    options: dict[str, Any] = field(default_factory=dict)
    space: str = "encoder"
    key_source: str = "features"
    size_aware_attention: bool = False
    preserve_norm: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.method, str):
            raise TypeError(f"`method` must be a method name (str), got {self.method!r}.")
        if self.keep_ratio is None and self.num_tokens is None:
            object.__setattr__(self, "keep_ratio", DEFAULT_KEEP_RATIO)
        merging.base.check_count_setting(self.keep_ratio, self.num_tokens)
        if self.keep_ratio is not None:
            object.__setattr__(self, "keep_ratio", float(self.keep_ratio))
        if not isinstance(self.options, Mapping):
            raise TypeError(f"`options` must be a dict of method options, got {self.options!r}.")
        object.__setattr__(self, "options", dict(self.options))  # a private copy: the caller's dict is not shared
        for name in ("window", "seed"):
            if name in self.options:
                raise ValueError(f"Pass `{name}` as its own field, not inside `options` ({self.options!r}).")
        if self.method == "ltbm" and self.window is None:
            object.__setattr__(self, "window", merging.DEFAULT_WINDOW)
        reducer = self.build_method()  # validates the method name, `window` and `options`
        # an option at the method's default is the same setting as no option (equal configs, one run folder)
        object.__setattr__(self, "options", merging.non_default_options(self.method, self.options))
        if self.seed is not None:
            merging.base._check_int("seed", self.seed, 0)
            if not reducer.uses_generator:
                raise ValueError(f"`seed` is only used by random methods; method {self.method!r} does not draw any.")
        if self.space not in MERGE_SPACES:
            raise ValueError(f"`space` must be one of {MERGE_SPACES}, got {self.space!r}.")
        if not isinstance(self.size_aware_attention, bool):
            raise TypeError(f"`size_aware_attention` must be True or False, got {self.size_aware_attention!r}.")
        if not isinstance(self.preserve_norm, bool):
            raise TypeError(f"`preserve_norm` must be True or False, got {self.preserve_norm!r}.")
        if self.preserve_norm and not reducer.averages:
            raise ValueError(
                f"`preserve_norm=True` rescales averaged tokens; method {self.method!r} selects tokens without "
                "averaging them. Use an averaging method (e.g. 'ltbm', 'global', 'pool') or preserve_norm=False."
            )
        if self.key_source not in KEY_SOURCES:
            raise ValueError(f"`key_source` must be one of {KEY_SOURCES}, got {self.key_source!r}.")
        if self.key_source != "features" and not reducer.uses_keys:
            raise ValueError(
                f"`key_source={self.key_source!r}` only applies to the merging methods; method {self.method!r} "
                "compares no keys."
            )

    # ----------------------------------------------------------------------------------------------- conversion
    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> AudioTokenMergeConfig:
        """Builds a config from a dict such as :meth:`to_dict` writes; unknown keys raise a `ValueError`."""
        if not isinstance(config, Mapping):
            raise TypeError(f"Expected a dict of merge settings, got {type(config).__name__}: {config!r}.")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f"Unknown audio token merge setting(s) {unknown}; known settings: {known}.")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable plain dict of every field (what `config.json` stores); `preserve_norm` only when set."""
        out = {
            f.name: (dict(v) if isinstance(v := getattr(self, f.name), dict) else v) for f in dataclasses.fields(self)
        }
        if not self.preserve_norm:
            del out["preserve_norm"]  # the setting as it was stored before the option existed
        return out

    @classmethod
    def from_value(cls, value: MergeSetting) -> Optional[AudioTokenMergeConfig]:
        """Normalises any accepted form of the setting.

        `None` (merging off) gives `None`; a method name such as `"ltbm"` gives that method with its defaults;
        a dict goes through :meth:`from_dict`; a config is returned as is (it is immutable).
        """
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(method=value)
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise TypeError(
            "`audio_token_merge` must be None, a method name (e.g. 'ltbm'), a dict or an AudioTokenMergeConfig, "
            f"got {type(value).__name__}: {value!r}."
        )

    # ------------------------------------------------------------------------------------------------- behaviour
    def build_method(self) -> TokenReducer:
        """The configured :class:`~hf_ltbm.TokenReducer` instance."""
        extra = {} if self.window is None else {"window": self.window}
        return merging.build_method(self.method, **self.options, **extra)

    @property
    def requires_scores(self) -> bool:
        """Whether the method needs per-token importance scores (encoder attention)."""
        return bool(self.build_method().requires_scores)

    @property
    def uses_keys(self) -> bool:
        """Whether the method compares similarity keys (the merging methods)."""
        return bool(self.build_method().uses_keys)

    def output_length(self, n: int) -> int:
        """Number of tokens a clip (or 30 s window) of `n` audio tokens is reduced to; a unit with no token (an Audio
        Flamingo 3 clip's last window of 320 samples or fewer) stays empty."""
        if n == 0:
            return 0
        return merging.output_length(n, keep_ratio=self.keep_ratio, num_tokens=self.num_tokens)

    def merge(
        self,
        x: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        *,
        keys: Optional[torch.Tensor] = None,
        scores: Optional[torch.Tensor] = None,
    ) -> MergeResult:
        """Applies the setting to `x [B, N, D]` (see :func:`~hf_ltbm.merge_tokens`).

        Args:
            x (`torch.Tensor` of shape `[B, N, D]`): tokens, padding at the end of each row.
            lengths (`torch.LongTensor` of shape `[B]`, *optional*): valid tokens per row (default: all `N`).
            keys (`torch.Tensor` of shape `[B, N, Dk]`, *optional*): merge keys (merging methods only).
            scores (`torch.Tensor` of shape `[B, N]`, *optional*): importance scores (attention-based pruning).

        Returns:
            :class:`~hf_ltbm.MergeResult` with `tokens [B, M_max, D]`, `lengths [B]`, `sizes [B, M_max]` and
            `assignment [B, N]`. With `seed` set, the random methods draw from a fresh generator seeded with it.
        """
        import torch

        reducer = self.build_method()
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        return merging.merge_tokens(
            x,
            lengths,
            method=reducer,
            keep_ratio=self.keep_ratio,
            num_tokens=self.num_tokens,
            keys=keys,
            scores=scores,
            generator=generator,
            preserve_norm=self.preserve_norm,
        )

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=repr))

    def __str__(self) -> str:
        shown = {k: v for k, v in self.to_dict().items() if k != "method" and v not in (None, {})}
        for name, default in (("space", "encoder"), ("key_source", "features"), ("size_aware_attention", False)):
            if shown.get(name) == default:
                shown.pop(name)
        return f"{self.method}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


#: Every form in which a merge setting is accepted.
MergeSetting = Union[None, str, Mapping[str, Any], AudioTokenMergeConfig]


def plain_setting(value: MergeSetting) -> Optional[dict[str, Any]]:
    """Any accepted form of a setting, validated, as the plain dict a model config stores (`None`: merging off).
    What `from_pretrained(..., audio_token_merge=...)` hands on: transformers puts the keyword in the config, whose
    INFO log line must be able to serialise it."""
    setting = AudioTokenMergeConfig.from_value(value)
    return None if setting is None else setting.to_dict()
