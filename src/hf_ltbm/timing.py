"""`PrefillTimer`: the time `generate()` spends before its first token (audio encoder, merge and LLM prefill)."""

from __future__ import annotations

import time
from typing import Any, Optional

import torch
from transformers import LogitsProcessor

__all__ = ["PrefillTimer"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PrefillTimer(LogitsProcessor):
    """Measures the prefill of one `generate()` call without running anything twice.

    The clock starts when the model's first forward call begins and stops when generation first asks for the next
    token's logits to be processed, i.e. right after the prefill forward (CUDA is synchronised at both ends).

    ```python
    with PrefillTimer(model) as timer:
        model.generate(**inputs, logits_processor=[timer])
    timer.seconds
    ```
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self._start: Optional[float] = None
        self._stop: Optional[float] = None
        self._hook: Any = None

    def __enter__(self) -> PrefillTimer:
        self._start = self._stop = None
        self._hook = self.model.register_forward_pre_hook(self._on_forward)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hook.remove()

    def _on_forward(self, module: torch.nn.Module, args: Any) -> None:
        if self._start is None:
            _sync(self.device)
            self._start = time.perf_counter()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._stop is None and self._start is not None:
            _sync(self.device)
            self._stop = time.perf_counter()
        return scores

    @property
    def seconds(self) -> float:
        """Prefill time of the last `generate()` inside the block (NaN if none ran)."""
        if self._start is None or self._stop is None:
            return float("nan")
        return self._stop - self._start
