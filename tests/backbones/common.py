"""What the per-family backbone tests share: a family's tiny model beside its upstream class with the same weights,
deterministic clips, and batched prompt inputs."""

import numpy as np

import hf_ltbm
from hf_ltbm.tiny import build_tiny_model


def tiny_with_upstream(name: str) -> tuple:
    """`(model, processor, upstream)`: the tiny model `name` (merging classes, no setting), its processor, and the
    upstream class the merging one extends (`_upstream_class`) with the same config and weights, in eval mode."""
    model, processor = build_tiny_model(name)
    upstream = model._upstream_class(model.config).eval()
    upstream.load_state_dict(model.state_dict())
    return model, processor, upstream


def clips(*seconds: float) -> list:
    """Deterministic noise clips of `seconds` each, 16 kHz mono float32."""
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in seconds]


def prompt_inputs(processor, audio: list, instruction: str):
    """Left-padded processor inputs: one prompt (`build_prompt` of `instruction`) per clip of `audio`."""
    prompts = [hf_ltbm.build_prompt(processor, instruction) for _ in audio]
    return processor(text=prompts, audio=audio, sampling_rate=16000, return_tensors="pt", padding=True)
