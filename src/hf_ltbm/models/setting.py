"""Where a merging model keeps its merge setting, and the forward that picks upstream's code or the merging path.

The setting lives in `config.audio_token_merge` as a plain dict (so that the config stays JSON-serialisable), shared by
a base model and its head; `SettingAccess` reads it (parsed once per stored dict), writes it (validated against the
audio encoder, the language model pointed at the size-aware attention function when the setting asks for it), saves
it with the weights, and dispatches a forward to upstream's code with merging off or to the merging path otherwise.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch

from .. import compat
from ..config import AudioTokenMergeConfig, MergeSetting, plain_setting
from .hooks import AudioTokenMergeHooks
from .size_aware import base_name, size_aware_name

#: The default of an `audio_token_merge` argument: not given (keep what the config holds), unlike an explicit `None`.
__all__ = ["UNSET", "SettingAccess", "init_setting"]

#: The default of `audio_token_merge=` arguments: "not given" (the setting saved in the config, if any, is kept).
UNSET: Any = object()


def _store_setting(config: Any, value: MergeSetting) -> None:
    """Normalises `value` and stores it on `config` as a plain dict (or `None`)."""
    parsed = AudioTokenMergeConfig.from_value(value)
    config.audio_token_merge = None if parsed is None else parsed.to_dict()


def init_setting(config: Any, audio_token_merge: MergeSetting) -> None:
    """At `__init__`: an explicit `audio_token_merge` wins, else whatever `from_pretrained` left on the config."""
    if audio_token_merge is not UNSET:
        _store_setting(config, audio_token_merge)
    elif getattr(config, "audio_token_merge", None) is not None:
        _store_setting(config, config.audio_token_merge)


class SettingAccess(AudioTokenMergeHooks):
    """`audio_token_merge` read from, and written to, the model config (shared by the base model and its head), and
    the forward that runs upstream's code with merging off and the merging path otherwise."""

    config: Any
    #: The docstring of the `forward` a subclass gets when it declares `_upstream_class` and no `forward` of its own.
    _forward_doc: str = (
        "Upstream `{upstream}.forward` (same signature) when merging is off; otherwise the merging path."
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        upstream = vars(cls).get("_upstream_class")
        if upstream is not None and "forward" not in vars(cls):
            cls.forward = _dispatching_forward(cls, upstream)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`; an `audio_token_merge=` keyword is validated before anything loads and
        handed on as a plain dict, so that the model config stays JSON-serialisable (transformers logs it at INFO
        level, and a config object in it made loading fail there)."""
        if "audio_token_merge" in kwargs:
            kwargs["audio_token_merge"] = plain_setting(kwargs["audio_token_merge"])
        return super().from_pretrained(*args, **kwargs)

    #: The upstream forward parameters the merging path implements, besides the backbone's `_audio_mask_name`. A
    #: parameter that a later transformers adds to the upstream forward, given a value, makes the merging path raise
    #: (see `compat.bind_forward`); `tests/models/test_signatures.py` fails as soon as a release adds one.
    _merging_parameters: frozenset[str] = frozenset(
        {
            "input_ids",
            "input_features",
            "attention_mask",
            "position_ids",
            "inputs_embeds",
            "labels",
            "use_cache",
            "return_dict",
        }
        | set(compat.CACHE_NAMES)
    )

    @classmethod
    def merging_parameters(cls) -> frozenset[str]:
        """The upstream forward parameters the merging path of this class implements."""
        return cls._merging_parameters | ({cls._audio_mask_name} if cls._audio_mask_name else set())

    def _unit_mask(self, kwargs: dict[str, Any]) -> Optional[torch.Tensor]:
        """The per-unit feature mask `[U, frames]` of a call's keyword arguments: the backbone's own argument, or all
        ones for a backbone without one (`None` without audio)."""
        if self._audio_mask_name is not None:
            return kwargs.get(self._audio_mask_name)
        features = kwargs.get("input_features")
        if features is None:
            return None
        return torch.ones(features.shape[0], features.shape[-1], dtype=torch.long, device=features.device)

    def _dispatch_forward(self, upstream_forward: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        """`upstream_forward(*args, **kwargs)` (the upstream class's forward, bound) when merging is off, bit-identical
        to upstream; otherwise the merging path on the same arguments, bound to the upstream signature, whose output
        becomes a tuple where upstream's would (`return_dict=False`, or `config.return_dict` false)."""
        if self.audio_token_merge is None:
            return upstream_forward(*args, **kwargs)
        forward = self._upstream_class.forward
        arguments = compat.bind_forward(forward, self.merging_parameters(), (self, *args), kwargs)
        as_tuple = compat.wants_tuple(self, arguments)
        outputs = self._merging_forward(**arguments)
        return outputs.to_tuple() if as_tuple else outputs

    @property
    def audio_token_merge(self) -> Optional[AudioTokenMergeConfig]:
        """The active merge setting (`None`: merging off). Stored in `config.audio_token_merge` as a plain dict."""
        value = getattr(self.config, "audio_token_merge", None)
        if isinstance(value, dict):
            # parsed once per stored dict (compared with a copy, so that an edit in place is seen): nothing is
            # serialised per call, which also keeps the forward traceable by `torch.compile(fullgraph=True)`
            cached = self.__dict__.get("_merge_cache")
            if cached is None or cached[0] is not value or cached[1] != value:
                cached = (value, copy.deepcopy(value), AudioTokenMergeConfig.from_dict(value))
                self.__dict__["_merge_cache"] = cached
            return cached[2]
        if value is not None:  # set directly on the config as a str / config object: normalise it once
            _store_setting(self.config, value)
            return self.audio_token_merge
        return None

    def set_audio_token_merge(self, value: MergeSetting) -> None:
        """Changes the merge setting of a loaded model (`None` turns merging off). See `hf_ltbm.audio_token_merge`
        for a context manager that restores the previous setting."""
        self._validate_audio_token_merge(AudioTokenMergeConfig.from_value(value))
        _store_setting(self.config, value)
        self._sync_attention()
        self.audio_token_merge  # noqa: B018  (parsed now, not in a forward that `torch.compile` traces)

    def _sync_attention(self) -> None:
        """Points the language model at the size-aware attention function when the setting asks for it, and back to
        the plain one otherwise."""
        language_model = getattr(self, "language_model", None)
        if language_model is None:
            return
        lm_config = language_model.config
        setting = self.audio_token_merge
        current = lm_config._attn_implementation
        wanted = (
            size_aware_name(current) if setting is not None and setting.size_aware_attention else base_name(current)
        )
        if wanted != current:
            lm_config._attn_implementation = wanted

    def _validate_audio_token_merge(self, setting: Optional[AudioTokenMergeConfig]) -> None:
        """Checks that this model can provide what the setting reads from its audio encoder, and the attention
        implementation size-aware attention needs."""
        if setting is None or not hasattr(self, "audio_tower"):
            return
        self._backbone.check_setting(setting)
        if setting.size_aware_attention:
            size_aware_name(self.language_model.config._attn_implementation)  # raises for flash attention
        needs = [
            what
            for what, wanted in (
                ("keys", setting.key_source == "encoder_keys"),
                ("attention scores", setting.requires_scores),
            )
            if wanted
        ]
        attn = getattr(getattr(self.audio_tower, "layers", [None])[-1], "self_attn", None)
        if needs and not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "head_dim")):  # `attention_heads`
            raise ValueError(
                f"audio_token_merge={setting} reads {' and '.join(needs)} from the last self-attention layer of the "
                f"audio encoder, but {type(self.audio_tower).__name__} has no such layer; use key_source='features' "
                "and a method that needs no scores."
            )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves like the upstream class (same weights, upstream `architectures`) plus the merge setting, with the
        weights under the keys of the released checkpoints on every transformers release (some releases double the
        language model's prefix; `compat.repair_saved_language_model_keys`), so that vLLM can serve the folder. To
        push to the Hub use `push_to_hub()`, which saves through this method."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.config.architectures = [self._upstream_class.__name__]
            self.config.save_pretrained(save_directory)
            compat.repair_saved_language_model_keys(save_directory)


def _dispatching_forward(cls: type, upstream: type) -> Any:
    """`cls.forward`: upstream's forward (`upstream`'s signature, never copied) when merging is off, the merging path
    otherwise (`SettingAccess._dispatch_forward`)."""

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self._dispatch_forward(super(cls, self).forward, args, kwargs)

    forward.__doc__ = cls._forward_doc.format(upstream=upstream.__name__)
    forward.__qualname__ = f"{cls.__name__}.forward"
    return compat.mirrors(upstream.forward)(forward)
