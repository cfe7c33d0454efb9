"""The merge setting of a vLLM request: where it comes from, what vLLM can serve, and how it travels to the model.

vLLM's multimodal processor (front end) and the model (engine core, possibly another process) only share the
multimodal tensors of a request, so the resolved setting of each audio item travels as one more tensor field:
its JSON, as bytes in a fixed-width `uint8` row. No vLLM import here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch

from ...config import AudioTokenMergeConfig

__all__ = ["FIELD", "KEY", "decode", "decode_items", "encode", "engine_setting", "resolve", "servable"]

#: The name of the setting in `mm_processor_kwargs` and in the model config.
KEY = "audio_token_merge"
#: The multimodal field that carries each audio item's resolved setting from the processor to the model.
FIELD = "audio_token_merge"
_WIDTH = 1024  # bytes per encoded setting
_UNSET: Any = object()


def servable(value: Any, where: str) -> Optional[AudioTokenMergeConfig]:
    """`value` (any accepted form of a setting) as a validated `AudioTokenMergeConfig` that vLLM can serve.

    Raises:
        ValueError, TypeError: an invalid setting (naming the field, the value and what is allowed), or one vLLM
            cannot serve: size-aware attention needs a per-key bias inside vLLM's attention kernels.
    """
    setting = AudioTokenMergeConfig.from_value(value)
    if setting is not None and setting.size_aware_attention:
        raise ValueError(
            f"{where}: `size_aware_attention=True` cannot be served by vLLM (it adds a per-key bias inside the "
            "attention kernels, which vLLM's attention backends do not take); set it to False, or use the "
            "transformers classes of hf-ltbm for size-aware attention."
        )
    return setting


def engine_setting(hf_config: Any) -> Optional[AudioTokenMergeConfig]:
    """The setting of the served model: `audio_token_merge` of its config (config.json or `hf_overrides`)."""
    return servable(getattr(hf_config, KEY, None), "the model config's `audio_token_merge`")


def resolve(mm_kwargs: Mapping[str, Any], hf_config: Any) -> Optional[AudioTokenMergeConfig]:
    """The setting of a request: its `mm_processor_kwargs` (request-level merged over engine-level) if they name one
    (`None` there turns merging off for the request), else the model config's."""
    value = mm_kwargs.get(KEY, _UNSET)
    if value is _UNSET:
        return engine_setting(hf_config)
    return servable(value, "`mm_processor_kwargs['audio_token_merge']`")


def without_setting(mm_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`mm_kwargs` less the setting (what the Hugging Face processor is called with)."""
    return {key: value for key, value in mm_kwargs.items() if key != KEY}


def encode(setting: Optional[AudioTokenMergeConfig]) -> torch.Tensor:
    """`setting` as a `uint8` tensor `[_WIDTH]` (JSON, zero-padded; `None` is `null`)."""
    data = json.dumps(None if setting is None else setting.to_dict(), sort_keys=True).encode()
    if len(data) > _WIDTH:
        raise ValueError(f"The merge setting is {len(data)} bytes as JSON; vLLM serving takes at most {_WIDTH}.")
    row = torch.zeros(_WIDTH, dtype=torch.uint8)
    row[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return row


@functools.lru_cache(maxsize=256)
def _decode_bytes(data: bytes) -> Optional[AudioTokenMergeConfig]:
    value = json.loads(data.rstrip(b"\0").decode())
    return None if value is None else AudioTokenMergeConfig.from_dict(value)


def decode(row: torch.Tensor) -> Optional[AudioTokenMergeConfig]:
    """The setting an `encode`d row holds."""
    return _decode_bytes(bytes(row.to("cpu", torch.uint8).tolist()))


def decode_items(value: Optional[torch.Tensor | Sequence[torch.Tensor]], items: int) -> list:
    """One setting per audio item from the batched field (`[items, _WIDTH]` or a list of rows); no field: `None`s."""
    if value is None:
        return [None] * items
    rows = list(value)
    if len(rows) != items:
        raise ValueError(f"Got {len(rows)} merge settings for {items} audio items.")
    return [decode(row) for row in rows]
