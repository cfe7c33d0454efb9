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
from collections.abc import Callable, Iterator, Mapping
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
    """`_LazyAutoMapping._extra_content` (the registered classes, by config class) with deferred entries.

    An entry is registered by the *name* of its config class and a function that makes the class: the config classes
    are looked up in `transformers` the first time the mapping is read (not while transformers is still importing
    the module that defines one), and a class is made when the mapping is read for its config, the way the mapping
    makes transformers' own classes from their names on first use.
    """

    def __init__(self, existing: dict) -> None:
        super().__init__(existing)
        self._pending: dict[str, Callable[[], type]] = {}

    def defer(self, config_name: str, make: Callable[[], type]) -> None:
        self._pending[config_name] = make

    def _settle(self) -> None:
        while self._pending:
            config_name, make = next(iter(self._pending.items()))
            config_class = getattr(importlib.import_module("transformers"), config_name)
            super().__setitem__(config_class, _Deferred(make))
            del self._pending[config_name]

    def __getitem__(self, key: Any) -> Any:
        self._settle()
        return self._made(key)

    def _made(self, key: Any) -> Any:
        """The class registered for `key` (settled), made now if it was deferred."""
        value = super().__getitem__(key)
        if isinstance(value, _Deferred):
            value = value.make()
            super().__setitem__(key, value)
        return value

    def __contains__(self, key: object) -> bool:
        self._settle()
        return super().__contains__(key)

    def __iter__(self) -> Iterator[Any]:
        self._settle()
        return super().__iter__()

    def __len__(self) -> int:
        self._settle()
        return super().__len__()

    def get(self, key: Any, default: Any = None) -> Any:
        self._settle()
        return self._made(key) if super().__contains__(key) else default

    def keys(self) -> list[Any]:  # type: ignore[override]
        return list(iter(self))

    def values(self) -> list[Any]:  # type: ignore[override]
        return [self._made(key) for key in self]

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        return [(key, self._made(key)) for key in self]


def register_deferred(auto_mapping: Any, config_name: str, make: Callable[[], type]) -> None:
    """Registers the class `make()` returns for the config class `transformers.<config_name>` in a transformers Auto
    mapping (`MODEL_MAPPING`-like: `AutoModel._model_mapping`, `PROCESSOR_MAPPING`), replacing any earlier
    registration. Nothing is imported now: the config class is looked up when the mapping is first read, and the
    class is made when the mapping is read for that config. Where the mapping does not keep registrations in
    `_extra_content` (a dict), both are looked up and registered now."""
    extra = getattr(auto_mapping, "_extra_content", None)
    if not isinstance(extra, dict):
        auto_mapping.register(getattr(importlib.import_module("transformers"), config_name), make(), exist_ok=True)
        return
    if not isinstance(extra, _DeferredMapping):
        extra = auto_mapping._extra_content = _DeferredMapping(extra)
    extra.defer(config_name, make)
