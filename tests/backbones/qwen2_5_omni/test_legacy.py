"""The two transformers layouts of the thinker: 5.19's flat thinker (`legacy.py`, the head holds the model methods)
and 5.20's thinker model under a head (`modeling.py`), chosen by one check."""

import subprocess
import sys

import transformers

from hf_ltbm.backbones import BACKBONES
from hf_ltbm.backbones.qwen2_5_omni import THINKER_MODEL, has_thinker_model
from hf_ltbm.models import AudioTokenMergeModelMixin


def test_one_check_picks_the_layout_of_the_installed_release():
    backbone = BACKBONES["qwen2_5_omni_thinker"]
    flat = not hasattr(transformers, THINKER_MODEL)
    assert has_thinker_model() is not flat and backbone.has_base_model() is not flat
    head = backbone.generation_model
    assert issubclass(head, transformers.Qwen2_5OmniThinkerForConditionalGeneration)
    if flat:  # 5.19: the head holds the merging model methods, made by legacy.py
        assert backbone.base_model is None and issubclass(head, AudioTokenMergeModelMixin)
        assert "hf_ltbm.backbones.qwen2_5_omni.legacy" in sys.modules
    else:
        assert issubclass(backbone.base_model, getattr(transformers, THINKER_MODEL))
        assert issubclass(backbone.base_model, AudioTokenMergeModelMixin)
        assert not issubclass(head, AudioTokenMergeModelMixin)
        assert "hf_ltbm.backbones.qwen2_5_omni.legacy" not in sys.modules


def test_the_declaration_answers_without_importing_model_code():
    code = (
        "import sys\n"
        "from hf_ltbm.backbones import BACKBONES\n"
        "BACKBONES['qwen2_5_omni_thinker'].has_base_model()\n"
        "print(sorted(m for m in sys.modules if 'modeling_qwen2_5_omni' in m or m.endswith(('.legacy', '.modeling'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
