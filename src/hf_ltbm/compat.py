"""Every binding of hf-ltbm to transformers internals, in one place, decided by feature detection.

transformers ships a release about every week, and internals move between them (5.24 renamed the KV cache from
`past_key_values` to `cache` in forwards, outputs and `generate()`; `slice_logits_to_keep` appeared in 5.21 and
`Pipeline._prepare_generate_kwargs` in 5.20). Nothing here compares version strings: each binding asks the installed
release what it has. The rest of hf-ltbm imports transformers internals only from this module.

- **Requirements.** `check_requirements()` runs on `import hf_ltbm` and raises an `ImportError` naming the installed
  release and the supported range when a hook hf-ltbm needs is missing, instead of degrading silently.
- **Forward signatures.** `mirrors(upstream_forward)` gives a merging class's `forward(self, *args, **kwargs)` the
  public signature of the upstream forward it extends (what `generate()` inspects for kwarg validation,
  `logits_to_keep` and `mm_encoder_outputs` support); `bind_forward` turns a call into named arguments with the KV
  cache under one internal name, whichever name the caller used.
- **The KV cache.** `cache_field(value)` builds output keywords, `output_cache(outputs)` reads it back,
  `call_with_cache(module, cache, **kwargs)` passes it to a submodule under the name that submodule takes, and
  `cache_arguments(kwargs)` finds every cache a `generate()` call was given, all without deprecation warnings.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib
import inspect
import json
import os
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, TypeVar

import torch
import transformers
from packaging.requirements import Requirement
from transformers import modeling_utils as _modeling_utils
from transformers.modeling_outputs import BaseModelOutputWithPast

__all__ = [
    "CACHE_NAMES",
    "OUTPUT_CACHE_FIELD",
    "REQUIRED_HOOKS",
    "SUPPORTED_TRANSFORMERS",
    "base_attention_functions",
    "can_return_tuple",
    "accepted_cache_names",
    "bind_forward",
    "cache_arguments",
    "cache_field",
    "cache_parameter",
    "call_with_cache",
    "check_requirements",
    "forward_parameters",
    "missing_hooks",
    "mirrors",
    "output_cache",
    "output_class",
    "returned_output_class",
    "wants_tuple",
    "prepare_pipeline_generate_kwargs",
    "processor_class_recorded_as",
    "repair_saved_language_model_keys",
    "slice_logits_to_keep",
    "defines",
    "find",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The names transformers has used for the KV cache keyword, newest first.
CACHE_NAMES = ("cache", "past_key_values")
_DEVELOPMENT_RANGE = ">=5.19,<6"  # pyproject.toml's, for a source tree that is not installed


def _declared_range() -> str:
    """The transformers requirement of the installed hf-ltbm distribution, lower bound first (e.g. `">=5.19,<6"`)."""
    try:
        requirements = metadata.requires("hf-ltbm") or []
    except metadata.PackageNotFoundError:
        return _DEVELOPMENT_RANGE
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name == "transformers" and requirement.specifier:
            specifiers = sorted(requirement.specifier, key=lambda spec: (spec.operator.startswith("<"), spec.version))
            return ",".join(str(spec) for spec in specifiers)
    return _DEVELOPMENT_RANGE


#: The range of transformers releases hf-ltbm supports: the requirement in its package metadata.
SUPPORTED_TRANSFORMERS = _declared_range()


# ----------------------------------------------------------------------------------------------------- requirements
#: What hf-ltbm binds to, as `(module, attribute path)`: the base models, the processors' audio hooks (where the merged
#: placeholder count is emitted), checkpoint conversion mappings, the attention and mask registries.
REQUIRED_HOOKS = (
    ("transformers", "AutoModelForMultimodalLM"),
    ("transformers", "AttentionInterface"),
    ("transformers.conversion_mapping", "get_checkpoint_conversion_mapping"),
    ("transformers.conversion_mapping", "register_checkpoint_conversion_mapping"),
    ("transformers.masking_utils", "AttentionMaskInterface"),
    ("transformers.masking_utils", "ALL_MASK_ATTENTION_FUNCTIONS"),
    ("transformers.masking_utils", "create_bidirectional_mask"),
    ("transformers.models.qwen2.modeling_qwen2", "Qwen2Model.forward"),
)
"""What every backbone binds to; each backbone declares its own on top (`Backbone.required_hooks`), checked when its
classes are first made."""


def find(module: str, path: str) -> Any:
    """`module.path` (a dotted attribute path), or `None` when the installed release lacks it. An attribute of a class
    counts only where that class defines it itself: an inherited default (e.g. `ProcessorMixin.replace_audio_token`)
    is not the hook of the backbone's processor."""
    try:
        value: Any = importlib.import_module(module)
    except ImportError:
        return None
    for name in path.split("."):
        value = vars(value).get(name) if isinstance(value, type) else getattr(value, name, None)
        if value is None:
            return None
    return value


def defines(cls: type, name: str) -> bool:
    """Whether `cls` defines `name` itself (a hook of that class on the installed release, not an inherited default:
    Qwen2.5-Omni's processor has `_process_audio` / `replace_audio_token` from 5.20 and
    `replace_multimodal_special_tokens` on 5.19)."""
    return name in vars(cls)


def missing_hooks(hooks: Iterable[tuple[str, str]] = ()) -> list[str]:
    """The hooks of `REQUIRED_HOOKS` and `hooks` (a backbone's, as `(module, dotted attribute path)`), and a KV-cache
    keyword in the language model's forward, that the installed transformers lacks, as dotted names."""
    wanted = [*REQUIRED_HOOKS, *hooks]
    missing = [f"{module}.{path}" for module, path in wanted if find(module, path) is None]
    forward = find("transformers.models.qwen2.modeling_qwen2", "Qwen2Model.forward")
    if forward is not None and not set(CACHE_NAMES) & set(inspect.signature(forward).parameters):
        missing.append(f"a KV-cache keyword ({' or '.join(CACHE_NAMES)}) in Qwen2Model.forward")
    return missing


def check_requirements(hooks: Iterable[tuple[str, str]] = ()) -> None:
    """Raises an `ImportError` naming the installed transformers release, what it lacks and the supported range when
    a hook hf-ltbm needs (`REQUIRED_HOOKS`, and a backbone's `hooks`) is missing: run when this module is imported and
    before a backbone's classes are made, so nothing binds to a missing hook."""
    missing = missing_hooks(hooks)
    if missing:
        supported = SUPPORTED_TRANSFORMERS
        raise ImportError(
            f"hf-ltbm supports transformers{supported}, but the installed transformers {transformers.__version__} "
            f"lacks {', '.join(missing)}. Install a supported release: pip install 'transformers{supported}'"
        )


check_requirements()

# Imported only after the check, so that a release without them gets the clear error above.
from transformers.conversion_mapping import (  # noqa: E402
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.masking_utils import (  # noqa: E402
    ALL_MASK_ATTENTION_FUNCTIONS,
    AttentionMaskInterface,
    create_bidirectional_mask,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # noqa: E402

__all__ += [
    "chat_template_processor_kwargs",
    "ALL_ATTENTION_FUNCTIONS",
    "ALL_MASK_ATTENTION_FUNCTIONS",
    "AttentionMaskInterface",
    "create_bidirectional_mask",
    "get_checkpoint_conversion_mapping",
    "register_checkpoint_conversion_mapping",
    "register_conversion",
]


# ---------------------------------------------------------------------------------------------------- the KV cache
#: The field under which model outputs hold the KV cache in the installed release.
OUTPUT_CACHE_FIELD = next(
    name for name in CACHE_NAMES if name in {f.name for f in dataclasses.fields(BaseModelOutputWithPast)}
)


def cache_field(value: Any) -> dict[str, Any]:
    """Output-class keywords that set the KV cache: `Output(..., **cache_field(cache))`."""
    return {OUTPUT_CACHE_FIELD: value}


def output_cache(outputs: Any) -> Any:
    """The KV cache a model output holds (`None` if none), read under the release's field name (no deprecation
    notice, unlike `.past_key_values` on releases that renamed it)."""
    if isinstance(outputs, Mapping):
        return outputs.get(OUTPUT_CACHE_FIELD)
    return getattr(outputs, OUTPUT_CACHE_FIELD, None)


@functools.cache
def signature(function: Callable) -> inspect.Signature:
    """`inspect.signature(function)`, computed once per function (forwards bind to it on every decoding step)."""
    return inspect.signature(function)


def forward_parameters(function: Callable) -> tuple[str, ...]:
    """The parameter names of `function`'s public signature (decorators that wrap it are seen through)."""
    return tuple(signature(function).parameters)


def cache_parameter(function: Callable) -> str:
    """The keyword under which `function` (a model forward) takes the KV cache: `"cache"` or `"past_key_values"`."""
    parameters = forward_parameters(function)
    for name in CACHE_NAMES:
        if name in parameters:
            return name
    raise TypeError(f"{getattr(function, '__qualname__', function)} takes no KV cache ({' / '.join(CACHE_NAMES)}).")


def call_with_cache(module: torch.nn.Module, cache: Any, **kwargs: Any) -> Any:
    """Calls `module` with `cache` under the keyword its forward takes (and no other cache keyword)."""
    name = cache_parameter(type(module).forward)
    return module(**{name: cache}, **kwargs)


def accepted_cache_names(function: Callable) -> tuple[str, ...]:
    """The keywords under which a call to `function` may pass the KV cache, the one its signature names first: on a
    release that renamed it to `cache`, the older names are accepted as deprecated aliases (as upstream's
    `@deprecate_kwarg` does)."""
    accepted = cache_parameter(function)
    return CACHE_NAMES if accepted == CACHE_NAMES[0] else (accepted,)


def cache_arguments(kwargs: Mapping[str, Any]) -> list[Any]:
    """Every KV cache (not `None`) found in a call's keyword arguments, under any of the names transformers uses."""
    return [kwargs[name] for name in CACHE_NAMES if kwargs.get(name) is not None]


# -------------------------------------------------------------------------------------------- forward signatures
def mirrors(upstream: Callable) -> Callable[[F], F]:
    """Decorator for a `forward(self, *args, **kwargs)` that extends `upstream`: the method gets `upstream`'s public
    signature, so `inspect.signature` (and `generate()`'s checks that use it) see exactly upstream's parameters, and
    whatever a later release adds is advertised without a hand-copied parameter list."""

    def decorate(method: F) -> F:
        method.__signature__ = signature(upstream)
        method.__mirrors__ = upstream  # what docs/gen_api.py names instead of a release-dependent parameter list
        return method

    return decorate


def bind_forward(upstream: Callable, handled: frozenset[str], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call `(self, *args, **kwargs)` to a forward that mirrors `upstream`, as one dict of keywords
    for the merging path, with the KV cache under `"kv_cache"` whichever name the caller used.

    Args:
        upstream: the upstream forward whose signature the call follows (`self` first).
        handled: the upstream parameter names the merging path implements; another one given a value raises.
        args, kwargs: the call's arguments (`args[0]` is `self`).

    Raises:
        TypeError: arguments that do not fit the signature, both cache names at once, or a value for an upstream
            parameter the merging path does not implement (a newer transformers than this hf-ltbm knows).
    """
    parameters = signature(upstream).parameters
    arguments = dict(signature(upstream).bind(*args, **kwargs).arguments)
    arguments.pop(next(iter(parameters)))  # self
    extra: dict[str, Any] = {}
    for name, parameter in parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = dict(arguments.pop(name, {}))
    accepted, *aliases = accepted_cache_names(upstream)
    cache = arguments.pop(accepted, None)
    for alias in aliases:
        value = extra.pop(alias, None)
        if value is not None and cache is not None:
            raise TypeError(f"Got the KV cache twice, as `{accepted}` and `{alias}`; pass only `{accepted}`.")
        if value is not None:
            warnings.warn(
                f"`{alias}` is deprecated in transformers {transformers.__version__}; use `{accepted}`.",
                FutureWarning,
                stacklevel=4,
            )
            cache = value
    unhandled = sorted(
        name for name, value in arguments.items() if name not in handled and value is not parameters[name].default
    )
    if unhandled:
        raise TypeError(
            f"{upstream.__qualname__} of transformers {transformers.__version__} takes {unhandled}, which the "
            "merging path of this hf-ltbm version does not implement; turn merging off for such calls or upgrade "
            "hf-ltbm."
        )
    return {**arguments, "kv_cache": cache, **extra}


# ---------------------------------------------------------------------------------------------------------- outputs
def returned_output_class(forward: Callable) -> Optional[type]:
    """The `ModelOutput` subclass an upstream `forward` returns, read from its return annotation
    (`tuple | Qwen2AudioCausalLMOutputWithPast`, `tuple | MultimodalCausalLMOutputWithPast`, ...); `None` when it names
    none."""
    from transformers.utils import ModelOutput

    annotation = signature(forward).return_annotation
    if isinstance(annotation, str):
        try:
            annotation = typing.get_type_hints(forward).get("return")
        except Exception:  # an annotation the module cannot resolve: no class to derive from
            return None
    for candidate in typing.get_args(annotation) or (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, ModelOutput):
            return candidate
    return None


@functools.cache
def output_class(ours: type, upstream_forward: Callable) -> type:
    """`ours` (an hf-ltbm output dataclass) extended with every field of the output class `upstream_forward` returns
    on the installed release: a dataclass subclass of both, so that a merging model's output carries each field of
    the upstream output it stands for (e.g. Qwen2.5-Omni's `image_outputs`) and is still an instance of `ours`."""
    upstream = returned_output_class(upstream_forward)
    if upstream is None or issubclass(ours, upstream):
        return ours
    name = f"AudioTokenMerge{upstream.__name__}"
    derived = type(
        name,
        (ours, upstream),
        {
            "__module__": ours.__module__,
            "__qualname__": name,
            "__doc__": f"`{ours.__name__}` with the fields of `{upstream.__module__}.{upstream.__qualname__}`.",
        },
    )
    return dataclasses.dataclass(derived)


def wants_tuple(module: Any, kwargs: dict[str, Any]) -> bool:
    """Whether a call to `module` asked for a tuple output: `return_dict=False` among `kwargs` (removed from them),
    else `module.config.return_dict` is false, as transformers' `can_return_tuple` decides."""
    return_dict = kwargs.pop("return_dict", None)
    if return_dict is None:
        return_dict = getattr(getattr(module, "config", None), "return_dict", True)
    return not return_dict


def can_return_tuple(method: F) -> F:
    """Decorator for a method returning a `ModelOutput`: a tuple instead when the call passes `return_dict=False` or
    the module's config says so (transformers' `can_return_tuple`, for hf-ltbm's own methods)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        as_tuple = wants_tuple(self, kwargs)
        output = method(self, *args, **kwargs)
        return output.to_tuple() if as_tuple and not isinstance(output, tuple) else output

    return wrapper  # type: ignore[return-value]


def _slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """`hidden_states [B, L, D]` restricted to the positions whose logits are wanted: the last `logits_to_keep`
    (0: all) or the given indices (what releases before `modeling_utils.slice_logits_to_keep` did inline)."""
    indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
    return hidden_states[:, indices, :]


slice_logits_to_keep: Callable[[torch.Tensor, int | torch.Tensor], torch.Tensor] = getattr(
    _modeling_utils, "slice_logits_to_keep", _slice_logits_to_keep
)


def base_attention_functions() -> dict[str, Callable]:
    """transformers' own "eager" and "sdpa" attention functions of the Qwen2 language model (what size-aware
    attention wraps), imported on first use."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.qwen2.modeling_qwen2 import eager_attention_forward

    return {"eager": eager_attention_forward, "sdpa": sdpa_attention_forward}


# ----------------------------------------------------------------------------------------------------- checkpoints
#: The key prefix of the language model in the released Qwen2-Audio / Audio Flamingo 3 checkpoints (what vLLM loads).
RELEASED_LANGUAGE_MODEL_PREFIX = "language_model.model."
_DOUBLED_LANGUAGE_MODEL_PREFIX = "language_model.model.model."


def repair_saved_language_model_keys(folder: str | os.PathLike) -> int:
    """Renames language-model keys that `save_pretrained` wrote under a doubled prefix (`language_model.model.model.*`,
    measured on transformers 5.19 to 5.22 for Qwen2-Audio and Audio Flamingo 3) to the released checkpoints' layout
    (`language_model.model.*`, what later releases write and what vLLM's loader takes), in every safetensors file of
    `folder` and its index. Decided by what the files hold, not by version; returns the number of keys renamed."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    renamed = 0

    def fixed(key: str) -> str:
        if key.startswith(_DOUBLED_LANGUAGE_MODEL_PREFIX):
            return RELEASED_LANGUAGE_MODEL_PREFIX + key[len(_DOUBLED_LANGUAGE_MODEL_PREFIX) :]
        return key

    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            keys, metadata = list(handle.keys()), handle.metadata()
        if not any(fixed(key) != key for key in keys):
            continue
        tensors = load_file(str(path))
        renamed += sum(fixed(key) != key for key in tensors)
        save_file({fixed(key): value for key, value in tensors.items()}, str(path), metadata=metadata)
    for index in folder.glob("*.safetensors.index.json"):
        data = json.loads(index.read_text())
        data["weight_map"] = {fixed(key): value for key, value in data.get("weight_map", {}).items()}
        index.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return renamed


def register_conversion(cls: type, model_type: str) -> None:
    """Gives a merging model class `cls` the checkpoint conversion mapping its upstream class (`cls._upstream_class`)
    gets, by class name, else by model type: transformers treats registered subclasses as custom code and would
    otherwise skip the key renaming of native checkpoints (`lm_head` would silently load random weights)."""
    mapping = get_checkpoint_conversion_mapping(cls._upstream_class.__name__)
    if mapping is None:
        mapping = get_checkpoint_conversion_mapping(model_type)
    if mapping is not None:
        register_checkpoint_conversion_mapping(cls.__name__, mapping, overwrite=True)


@contextlib.contextmanager
def processor_class_recorded_as(processor: Any, name: str) -> Iterator[None]:
    """While `processor.save_pretrained` runs, its tokenizers record `name` as their `processor_class` in
    `tokenizer_config.json` (`ProcessorMixin.save_pretrained` hands them `type(processor).__name__` through
    `_set_processor_class`), so that a folder saved by a subclass names the upstream class there too. Tokenizers
    without that hook are left alone."""
    patched = []
    for value in vars(processor).values():
        record = getattr(value, "_set_processor_class", None)
        if callable(record) and "_set_processor_class" not in vars(value):
            value._set_processor_class = functools.partial(lambda _given, record: record(name), record=record)
            patched.append(value)
    try:
        yield
    finally:
        for value in patched:
            del value._set_processor_class


# -------------------------------------------------------------------------------------------------------- pipelines
def prepare_pipeline_generate_kwargs(pipeline: Any, generate_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The `generate()` kwargs a pipeline call passes: the pipeline's own preparation where the release has one
    (`Pipeline._prepare_generate_kwargs`); else a copy of the call's `generation_config` (or of the pipeline's prepared
    one) updated with the call's generation parameters, and the other kwargs as given, since `generate()` deprecates
    a `generation_config` passed together with generation parameters. `generate_kwargs` is not modified."""
    prepare = getattr(pipeline, "_prepare_generate_kwargs", None)
    if prepare is not None:
        return prepare(dict(generate_kwargs))
    kwargs = dict(generate_kwargs)
    config = copy.deepcopy(kwargs.pop("generation_config", None) or pipeline.generation_config)
    others = config.update(**kwargs)  # sets the generation parameters, returns the rest
    return {**others, "generation_config": config}


def chat_template_processor_kwargs(apply_chat_template: Callable, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments for a processor's `apply_chat_template` that are meant for its `__call__` (`padding`, ...):
    under `processor_kwargs` where the method takes it (transformers 5.20 and later, which warn about them loose),
    loose otherwise (5.19)."""
    if "processor_kwargs" in signature(apply_chat_template).parameters:
        return {"processor_kwargs": kwargs}
    return kwargs
