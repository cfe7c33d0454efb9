"""The tiny Qwen2.5-Omni thinker the tests share (built once per test module)."""

import pytest

from ...encoding import with_frames_video_processor
from .inputs import NAME


@pytest.fixture(scope="module")
def tiny():
    """`(model, processor)`: the tiny random thinker and its merging processor (no setting)."""
    from hf_ltbm.tiny import build_tiny_model

    return build_tiny_model(NAME)


@pytest.fixture(scope="module")
def tiny_video():
    """`(model, processor)` whose processor takes videos as frame arrays (no video decoding)."""
    from hf_ltbm.tiny import build_tiny_model

    model, processor = build_tiny_model(NAME)
    return model, with_frames_video_processor(processor)
