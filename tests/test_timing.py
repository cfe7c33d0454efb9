import math
import time

import numpy as np
import torch

from hf_ltbm.timing import PrefillTimer
from hf_ltbm.tiny import build_tiny_model


def test_prefill_is_part_of_the_generate_time_and_resets():
    model, processor = build_tiny_model(audio_token_merge="ltbm")
    audio = (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)
    inputs = processor(text=processor.audio_token, audio=[audio], sampling_rate=16000, return_tensors="pt")
    timer = PrefillTimer(model)
    assert math.isnan(timer.seconds)
    for _ in range(2):
        start = time.perf_counter()
        with timer, torch.no_grad():
            model.generate(**inputs, max_new_tokens=5, do_sample=False, logits_processor=[timer])
        total = time.perf_counter() - start
        assert 0 < timer.seconds < total
    assert not model._forward_pre_hooks  # the hook is removed on exit
