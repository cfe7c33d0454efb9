"""Inputs of the Qwen2.5-Omni thinker tests: clips on their own, and videos with their audio tracks."""

import numpy as np
import transformers
from packaging import version

import hf_ltbm
from hf_ltbm import build_prompt

NAME = "tiny-random-qwen2-5-omni"
HALF = {"method": "ltbm", "keep_ratio": 0.5, "window": 3}
CHUNK = 50  # 2 s of audio tokens: upstream's `position_id_per_seconds * seconds_per_chunk`
TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
VIDEO = "<|vision_bos|><|VIDEO|><|vision_eos|>"
AUDIO = "<|audio_bos|><|AUDIO|><|audio_eos|>"


def clips():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(16000 * 3).astype(np.float32), rng.standard_normal(16000 * 5).astype(np.float32)]


def clip_inputs(processor, texts=("describe the sound", "what is this")):
    prompts = [build_prompt(processor, t) for t in texts]
    return processor(text=prompts, audio=clips(), sampling_rate=16000, return_tensors="pt", padding=True)


def stock_and_merged(processor):
    """The inputs of the stock processor (N placeholders per clip) and of the merging one (M, keep 0.5)."""
    stock = clip_inputs(processor)
    processor.set_audio_token_merge(HALF)
    try:
        return stock, clip_inputs(processor)
    finally:
        processor.set_audio_token_merge(None)


def video_inputs(processor, setting=None):
    """Row 0: a 5 s video (2 fps, 3 chunks of frames) with its 7 s audio track (4 chunks: the last two follow the
    video's end). Row 1: a 3 s clip on its own, then a 2 s video with its 2 s audio track."""
    rng = np.random.default_rng(0)
    videos = [np.zeros((10, 3, 56, 56), np.float32), np.zeros((4, 3, 56, 56), np.float32)]
    audio = [rng.standard_normal(16000 * s).astype(np.float32) for s in (7, 3, 2)]
    texts = [TEMPLATE.format(VIDEO + "what happens"), TEMPLATE.format(AUDIO + "and" + VIDEO + "hm")]
    processor.set_audio_token_merge(setting)
    try:
        return processor(
            text=texts, videos=videos, audio=audio, return_tensors="pt", padding=True, **from_video([0, None, 1])
        )
    finally:
        processor.set_audio_token_merge(None)


def from_video(sources):
    """The processor options that take each video's audio track from `audio` (`sources[i]`: the video of audio `i`,
    `None` for a clip on its own), on transformers 5.20 and later and on 5.19."""
    if version.parse(transformers.__version__) >= version.parse("5.20"):
        return {"load_audio_from_video": True, "audio_from_video_indices": sources}
    return {"use_audio_in_video": True}


def runs(ids, token):
    """Lengths of the runs of `token` in a row of ids."""
    is_token = np.r_[False, (ids == token).numpy(), False]
    edges = np.flatnonzero(np.diff(is_token.astype(int)))
    return (edges[1::2] - edges[::2]).tolist()


def half(n):
    return hf_ltbm.output_length(n, keep_ratio=0.5)
