"""lmms-eval plugin: evaluates every hf-ltbm backbone with merged audio tokens in lmms-eval.

Installed with hf-ltbm (`pip install "hf-ltbm[lmms]"`), the models are found by lmms-eval through the
`lmms_eval.models` entry point, one per backbone (its `lmms_eval_id`: `hf_ltbm_qwen2_audio`,
`hf_ltbm_audioflamingo3`, `hf_ltbm_musicflamingo`, `hf_ltbm_voxtral`, `hf_ltbm_qwen2_5_omni`), chat-style and
batched, with the merge setting in `--model_args`:

```bash
lmms-eval --model hf_ltbm_qwen2_audio \\
    --model_args pretrained=Qwen/Qwen2-Audio-7B-Instruct,method=ltbm,keep_ratio=0.5,window=3 \\
    --tasks mmau_test_mini,clotho_aqa --batch_size 8
```

Nothing here imports lmms-eval before lmms-eval asks for a model (`import hf_ltbm` never needs it).
"""

from __future__ import annotations

from typing import Any

from ...backbones import BACKBONES

__all__ = ["MODELS", "manifests"]

#: lmms-eval model id -> the class that serves it (`model.HFLTBMAudioModel` for that backbone, made on first use).
MODELS = {backbone.lmms_eval_id: f"{__name__}.model.{backbone.class_prefix}LTBM" for backbone in BACKBONES.values()}


def manifests() -> list[Any]:
    """The `lmms_eval.models` entry point: one chat-style `ModelManifest` per backbone."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=model_id, chat_class_path=path) for model_id, path in MODELS.items()]
