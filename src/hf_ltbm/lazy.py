"""Deferred work for a cheap `import hf_ltbm`: run a callback once a module has been imported, register classes
with transformers' Auto mappings that are made only when looked up, and load a package's names on first use
(`lazy_exports`).

`import hf_ltbm` imports neither torch nor transformers. What it must do to transformers (register the merging classes
with the Auto classes, the pipeline task) runs when transformers' own module for it is imported, or at once when it
already is: `when_imported("transformers.models.auto.modeling_auto", register_models)`. Such a callback runs in the
middle of transformers' import, so what it uses must import nothing heavy: this module imports no transformers and no
hf-ltbm module. `register_deferred` is the one binding to transformers internals outside `hf_ltbm.compat` for that
reason (compat imports transformers' model code).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import threading
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, Optional

__all__ = ["lazy_exports", "register_deferred", "when_imported"]

_PENDING: dict[str, list[Callable[[ModuleType], Any]]] = {}
_LOCK = threading.RLock()


class _NotifyingLoader(importlib.abc.Loader):
    """Wraps a module's loader: runs the callbacks waiting for the module once it has been executed."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Optional[ModuleType]:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__.loader = self._loader  # the module keeps its own loader (reloads, `importlib.resources`)
        self._loader.exec_module(module)
        with _LOCK:
            callbacks = _PENDING.pop(module.__name__, [])
        for callback in callbacks:
            callback(module)

    def __getattr__(self, name: str) -> Any:  # `get_source`, `is_package`, ... of the wrapped loader
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: gives the modules callbacks wait for a `_NotifyingLoader`."""

    _searching = threading.local()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _PENDING or getattr(self._searching, "active", False):
            return None
        self._searching.active = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching.active = False
        if spec is not None and spec.loader is not None:
            spec.loader = _NotifyingLoader(spec.loader)
        return spec


_FINDER = _Finder()


def when_imported(name: str, callback: Callable[[ModuleType], Any]) -> None:
    """Calls `callback(module)` once module `name` is imported: now if it already is, else right after it is."""
    with _LOCK:
        module = sys.modules.get(name)
        if module is None:
            _PENDING.setdefault(name, []).append(callback)
            if _FINDER not in sys.meta_path:
                sys.meta_path.insert(0, _FINDER)
            return
    callback(module)


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` (PEP 562) for `package` that loads its names on first use: a name of `exports`
    (name -> the module, relative to `package`, that defines it) from its module, any other name that is a submodule
    as that submodule. What it loads is kept in the module, so each name is looked up once."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        elif importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


class _Deferred:
    """A class registered with an Auto mapping but made only when the mapping is read for its config."""

    def __init__(self, make: Callable[[], type]) -> None:
        self.make = make


class _DeferredMapping(dict):
    """`_LazyAutoMapping._extra_content` (the registered classes, by config class) whose `_Deferred` values are made
    when they are looked up, the way the mapping makes transformers' own classes from their names on first use."""

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, _Deferred):
            value = value.make()
            super().__setitem__(key, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def values(self) -> list[Any]:  # type: ignore[override]
        return [self[key] for key in self]

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        return [(key, self[key]) for key in self]


def register_deferred(auto_mapping: Any, config_class: type, make: Callable[[], type]) -> None:
    """Registers the class `make()` returns for `config_class` in a transformers Auto mapping (`MODEL_MAPPING`-like:
    `AutoModel._model_mapping`, `PROCESSOR_MAPPING`), replacing any earlier registration, without making the class
    until the mapping is read for that config. Where the mapping does not keep registrations in `_extra_content`
    (a dict), the class is made and registered now."""
    extra = getattr(auto_mapping, "_extra_content", None)
    if not isinstance(extra, dict):
        auto_mapping.register(config_class, make(), exist_ok=True)
        return
    if not isinstance(extra, _DeferredMapping):
        extra = auto_mapping._extra_content = _DeferredMapping(extra)
    dict.__setitem__(extra, config_class, _Deferred(make))


# ------------------------------------------------------------------------------------------------------- processors
