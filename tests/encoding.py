"""Model inputs for a prompt and clips on any backbone: the processor's own call with the prompt's audio
placeholders, or, for a backbone whose prompts are written from chats (Voxtral), the chat through the backbone."""

from contextlib import contextmanager
from unittest import mock

import pytest
import torch

import hf_ltbm
from hf_ltbm.backbones import backbone_for, units_per_clip

from .models.tiny import frames_per_token, tokens_for_frames


def encode(processor, prompt, audio, prompts=None):
    """Left-padded inputs for `audio` (one clip per row) with `prompt` (or one of `prompts` per row)."""
    prompts = prompts or [prompt] * len(audio)
    backbone = backbone_for(processor)
    if backbone is not None and backbone.chat_only:
        chats = [
            [{"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": text}]}]
            for clip, text in zip(audio, prompts)
        ]
        return backbone.encode_chats(processor, chats, processor.feature_extractor.sampling_rate)
    texts = [hf_ltbm.build_prompt(processor, text) for text in prompts]
    kw = dict(sampling_rate=16000, padding=True, padding_side="left", return_tensors="pt")
    return processor(text=texts, audio=audio, **kw)


def unit_tokens(processor, seconds):
    """Audio tokens before merging of each audio unit of a clip of `seconds`: one unit (25 per second) for
    Qwen2-Audio, 30 s windows for the Flamingos and GLM-ASR (12.5 per second), 375-token chunks (any length padded to
    30 s) for Voxtral."""
    samples = int(seconds * 16000)
    units = units_per_clip(processor, [samples])[0]
    backbone = backbone_for(processor)
    if backbone is not None and backbone.chat_only:
        return [375] * units
    per_token = 4 if backbone is None else frames_per_token(backbone.model_type)
    window = 30 * 16000 if units > 1 else samples
    return [tokens_for_frames(-(-min(window, samples - u * window) // 160), per_token) for u in range(units)]


def tokens_per_clip(processor, seconds):
    """Audio tokens before merging of a clip of `seconds` (25 per second; Voxtral: 375 per started 30 s chunk)."""
    return sum(unit_tokens(processor, seconds))


@contextmanager
def upstream_check_accepts_stand_in_video_processor():
    """Within the block, transformers' processors accept a `BaseVideoProcessor` as their video processor where
    torchvision is missing (transformers then cannot resolve the base class it checks against): the stock
    Qwen2.5-Omni processor, built for a comparison, with the tiny model's stand-in."""
    from transformers.processing_utils import ProcessorMixin
    from transformers.utils import is_torchvision_available
    from transformers.video_processing_utils import BaseVideoProcessor

    original = ProcessorMixin.check_argument_for_proper_class

    def check(self, argument_name, argument):
        if argument_name == "video_processor" and isinstance(argument, BaseVideoProcessor):
            return type(argument)
        return original(self, argument_name, argument)

    if is_torchvision_available():
        yield
        return
    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", check):
        yield


#: upstream's interleaving of a video's audio calls `np.arange` on a torch scalar (numpy 2 warns): tests marked with
#: this run it
upstream_interleaving_warning = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def frames_video_processor():
    """A video processor that gives Qwen2-VL's outputs without torchvision (which Qwen2-VL's needs): a video of `F`
    frames becomes `F / 2` temporal patches of 4 x 4 spatial patches (4 tokens per temporal patch after the 2 x 2
    merge), with pixel values of the right width drawn from the frame count (equal videos, equal pixels). What the
    Qwen2.5-Omni tests with videos use: upstream's processor and model do the rest."""
    from transformers.feature_extraction_utils import BatchFeature
    from transformers.video_processing_utils import BaseVideoProcessor

    class FramesVideoProcessor(BaseVideoProcessor):
        merge_size = 2
        temporal_patch_size = 2
        patch_size = 14

        def __call__(self, videos, **kwargs):
            videos = videos if isinstance(videos, list) else [videos]
            grids = torch.tensor([[len(video) // 2, 4, 4] for video in videos])
            pixels = [
                torch.randn(int(grid.prod()), 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(len(video)))
                for video, grid in zip(videos, grids)
            ]
            return BatchFeature({"pixel_values_videos": torch.cat(pixels), "video_grid_thw": grids})

    return FramesVideoProcessor()


def with_frames_video_processor(processor):
    """`processor` (Qwen2.5-Omni's) with `frames_video_processor()` as its video processor."""
    with upstream_check_accepts_stand_in_video_processor():
        processor.video_processor = frames_video_processor()
    return processor


def qwen2_5_omni_upstream_positions(model, inputs, use_audio_in_video: bool = False):
    """Upstream's `get_rope_index` for a Qwen2.5-Omni thinker's inputs (a stock processor's prompt): positions
    `[3, B, L]` and `rope_deltas` `[B, 1]`."""
    return model._merge_model.get_rope_index(
        inputs["input_ids"],
        inputs.get("image_grid_thw"),
        inputs.get("video_grid_thw"),
        inputs["attention_mask"],
        use_audio_in_video,
        inputs["feature_attention_mask"].sum(-1),
        inputs.get("video_second_per_grid"),
    )


def assert_keep_one_reproduces_upstream(model, inputs, **forward_kwargs):
    """A Qwen2.5-Omni thinker merging at keep 1.0 gives `inputs` (a stock processor's prompt) upstream's positions,
    `rope_deltas` and logits exactly; `forward_kwargs` go to both forwards and to `get_rope_index`."""
    upstream, deltas = qwen2_5_omni_upstream_positions(model, inputs, **forward_kwargs)
    with torch.no_grad():
        reference = model(**inputs, **forward_kwargs).logits
        with hf_ltbm.audio_token_merge(model, {"method": "ltbm", "keep_ratio": 1.0}):
            out = model(**inputs, **forward_kwargs)
            rope_deltas = model._merge_model.rope_deltas
    valid = inputs["attention_mask"].bool()
    assert torch.equal(out.position_ids[:, valid], upstream[:, valid])
    assert torch.equal(rope_deltas, deltas)
    assert torch.equal(out.logits, reference)
