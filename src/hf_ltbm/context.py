"""`audio_token_merge(model, setting)`: use a loaded model under another merge setting for the length of a block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from .config import AudioTokenMergeConfig, MergeSetting

__all__ = ["audio_token_merge"]


@contextmanager
def audio_token_merge(
    model: Any, setting: MergeSetting, processor: Optional[Any] = None
) -> Iterator[Optional[AudioTokenMergeConfig]]:
    """Temporarily runs `model` (and the merging `processor`, if given) with `setting`; the previous settings come
    back on exit, also when the block raises.

    ```python
    with hf_ltbm.audio_token_merge(model, {"method": "global", "keep_ratio": 0.25}, processor):
        out = model.generate(**processor(text=prompt, audio=audio, return_tensors="pt"))
    ```

    Args:
        model: a merging model (`*LTBMModel`, `*LTBMForConditionalGeneration`, or a PEFT wrapper of one).
        setting: a method name, a dict, an `AudioTokenMergeConfig`, or `None` to turn merging off.
        processor: optional. A merging processor gets the same setting, so that the prompts it builds carry the
            merged placeholder count; a stock processor is left alone (the model then compacts its prompts).

    Yields:
        The parsed setting. Not thread-safe: the setting lives on the model, so concurrent users of one model see it.
    """
    if not hasattr(model, "set_audio_token_merge"):
        raise TypeError(
            f"{type(model).__name__} has no merge setting; load the model after `import hf_ltbm` through an Auto "
            "class (or a `*LTBM*` class) to get a merging model."
        )
    parsed = AudioTokenMergeConfig.from_value(setting)
    switch_processor = processor is not None and hasattr(processor, "set_audio_token_merge")
    previous_model = model.audio_token_merge
    previous_processor = processor.audio_token_merge if switch_processor else None
    model.set_audio_token_merge(parsed)  # validates against the model before anything changes
    try:
        if switch_processor:
            processor.set_audio_token_merge(parsed)
        yield parsed
    finally:
        model.set_audio_token_merge(previous_model)
        if switch_processor:
            processor.set_audio_token_merge(previous_processor)
