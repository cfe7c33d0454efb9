"""The registry that names the token-reduction methods, importable without torch.

The built-in methods are listed here as `"module:Class"` strings (relative to this package) and imported the first
time one is used, so that the names (the command line's help, the config's validation messages) cost no torch
import. A method registered with :func:`register_method` (the built-ins' classes are too, when their module runs)
is stored as its class.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from .base import TokenReducer

__all__ = ["DEFAULT_WINDOW", "available_methods", "get_method_class", "non_default_options", "register_method"]

#: Default LTBM window, in slots of the current sequence. A-B distances are odd, so windows 2k and 2k - 1 are
#: identical; 3 lets a token reach its neighbour and the next-but-one B token on either side. Chosen by the sweep in
#: `benchmarks/window_sweep.py` (results and reasoning in `docs/window_sweep.md`): the largest window whose merged
#: tokens still cover under a quarter second on average at keep 0.25.
DEFAULT_WINDOW = 3

#: The built-in methods in the order `available_methods` lists them: name -> `"module:Class"` (module relative to
#: this package), imported on first use.
BUILTIN_METHODS = {
    "ltbm": ".bipartite:LocalTemporalBipartiteMerge",
    "global": ".bipartite:GlobalMerge",
    "pool": ".pooling:AveragePooling",
    "prune_norm": ".pruning:NormPruning",
    "prune_attention": ".pruning:AttentionPruning",
    "segment_topk": ".pruning:SegmentTopKPruning",
    "random": ".pruning:RandomPruning",
}

# name -> the registered class, or a built-in's "module:Class" until it is first used
_REGISTRY: dict[str, Union[str, type[TokenReducer]]] = dict(BUILTIN_METHODS)


def _target(entry: str) -> tuple[str, str]:
    """A `"module:Class"` entry as `(absolute module name, class name)`."""
    module, _, qualname = entry.partition(":")
    return importlib.util.resolve_name(module, __package__), qualname


def _qualname(entry: Union[str, type]) -> str:
    return _target(entry)[1] if isinstance(entry, str) else entry.__qualname__


def register_method(name: str, *, overwrite: bool = False):
    """Class decorator that registers a :class:`TokenReducer` subclass under `name`.

    Example:

    ```python
    @register_method("keep_first")
    class KeepFirst(TokenReducer):
        averages = False

        def assign(self, x, lengths, num_out, **_):
            pos = torch.arange(x.shape[1], device=x.device)[None]
            return torch.where(pos < num_out[:, None], pos, -1)
    ```
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string, got {name!r}.")

    def decorator(cls: type[TokenReducer]) -> type[TokenReducer]:
        from .base import TokenReducer  # a class to register has imported torch already

        if not (isinstance(cls, type) and issubclass(cls, TokenReducer)):
            raise TypeError(f"Only TokenReducer subclasses can be registered, got {cls!r}.")
        current = _REGISTRY.get(name)
        builtin = name in BUILTIN_METHODS and _target(BUILTIN_METHODS[name]) == (cls.__module__, cls.__qualname__)
        if builtin:  # a built-in's module runs: the class takes the place of its entry, unless a user's replaced it
            cls.name = name
            if current == BUILTIN_METHODS[name]:
                _REGISTRY[name] = cls
            return cls
        if current is not None and current is not cls and not overwrite:
            raise ValueError(
                f"A method named {name!r} is already registered ({_qualname(current)}); "
                "pass `overwrite=True` to replace it."
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_methods() -> list[str]:
    """Names of all registered methods, in registration order."""
    return list(_REGISTRY)


def get_method_class(name: str) -> type[TokenReducer]:
    """The :class:`TokenReducer` subclass registered under `name`."""
    try:
        entry = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown `method` {name!r}; known methods: {', '.join(map(repr, _REGISTRY))}.") from None
    if isinstance(entry, str):  # a built-in's first use: importing its module registers the class
        module, qualname = _target(entry)
        cls = getattr(importlib.import_module(module), qualname)
        if _REGISTRY.get(name) == entry:
            _REGISTRY[name] = cls
        return cls
    return entry


def non_default_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` of method `name` less those given at the method's default value (so that a setting written with an
    option at its default and one without it are the same setting)."""
    defaults = {
        f.name: f.default for f in dataclasses.fields(get_method_class(name)) if f.default is not dataclasses.MISSING
    }
    return {key: value for key, value in options.items() if key not in defaults or defaults[key] != value}
