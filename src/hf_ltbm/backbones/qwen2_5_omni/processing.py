"""Qwen2.5-Omni's merging processor: `output_length(N)` `<|AUDIO|>` placeholders per clip, merged per 2 s chunk for
audio that comes with video."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from transformers import Qwen2_5OmniProcessor
from transformers.utils import is_torchvision_available
from transformers.video_processing_utils import BaseVideoProcessor

from ... import compat
from ...compat import mirrors
from ...config import MergeSetting
from ...processing import MergeSettingProcessorMixin
from .positions import merged_chunk_runs

__all__ = ["Qwen2_5OmniThinkerLTBMProcessor"]


class Qwen2_5OmniThinkerLTBMProcessor(MergeSettingProcessorMixin, Qwen2_5OmniProcessor):
    """`Qwen2_5OmniProcessor` that emits `output_length(N)` `<|AUDIO|>` placeholders per clip. Features are the
    upstream ones; with a merge setting only `input_ids` / `attention_mask` are shorter. Audio longer than the feature
    extractor's window raises instead of being truncated.

    Without torchvision (which Qwen2.5-Omni's video processor needs) a `BaseVideoProcessor` may stand in for the video
    processor: audio and images need none.

    Args:
        image_processor, video_processor, feature_extractor, tokenizer, chat_template: as for `Qwen2_5OmniProcessor`.
        audio_token_merge (`str`, `dict` or `AudioTokenMergeConfig`, *optional*): the model's merge setting.
    """

    _upstream_class = Qwen2_5OmniProcessor

    def __init__(
        self,
        image_processor=None,
        video_processor=None,
        feature_extractor=None,
        tokenizer=None,
        chat_template=None,
        audio_token_merge: MergeSetting = None,
    ):
        self._init_setting(audio_token_merge)
        super().__init__(image_processor, video_processor, feature_extractor, tokenizer, chat_template=chat_template)

    def check_argument_for_proper_class(self, argument_name: str, argument: Any):
        """Upstream's check, except that without torchvision (where transformers cannot resolve the video processor's
        base class) a `BaseVideoProcessor` is accepted as the video processor."""
        if argument_name == "video_processor" and not is_torchvision_available():
            if isinstance(argument, BaseVideoProcessor):
                return type(argument)
        return super().check_argument_for_proper_class(argument_name, argument)

    def _check_lengths(self, audio: Any) -> None:
        clips = audio if isinstance(audio, (list, tuple)) else [audio]
        self.check_audio_lengths([np.asarray(clip).shape[-1] for clip in clips], self.feature_extractor.sampling_rate)

    if compat.defines(Qwen2_5OmniProcessor, "_process_audio"):  # 5.20 and later: loaded audio is featurised here

        def _process_audio(self, audio, **kwargs):
            self._check_lengths(audio)
            return super()._process_audio(audio, **kwargs)

    else:  # 5.19: the arrays go to the feature extractor inside __call__

        @mirrors(Qwen2_5OmniProcessor.__call__)
        def __call__(self, *args: Any, **kwargs: Any):
            """Upstream `__call__` (same signature); audio longer than the feature extractor's window raises."""
            audio = compat.signature(Qwen2_5OmniProcessor.__call__).bind(self, *args, **kwargs).arguments.get("audio")
            if audio is not None:
                self._check_lengths(audio)
            return super().__call__(*args, **kwargs)

        @mirrors(Qwen2_5OmniProcessor.replace_multimodal_special_tokens)
        def replace_multimodal_special_tokens(self, *args: Any, **kwargs: Any):
            """Upstream's expansion (same signature) with `merged_length(N)` placeholders per clip, and for audio
            that arrives with video `merged_length(n)` per chunk of `n` (module docstring)."""
            call = compat.signature(Qwen2_5OmniProcessor.replace_multimodal_special_tokens).bind(self, *args, **kwargs)
            arguments = call.arguments
            if self.merge_config is None:
                return Qwen2_5OmniProcessor.replace_multimodal_special_tokens(*call.args, **call.kwargs)
            in_video = bool(arguments.get("use_audio_in_video"))
            # upstream takes the clip lengths in the order their tokens appear: an audio token's clip is merged
            # whole; with audio in video a video token's clip is interleaved first and merged per chunk below
            pattern = f"{re.escape(self.audio_token)}|{re.escape(self.video_token)}"
            takers = [match.group() for sample in arguments["text"] for match in re.finditer(pattern, sample)]
            takers = [token for token in takers if token == self.audio_token or in_video]
            lengths = [int(n) for n in arguments["audio_lengths"]]
            arguments["audio_lengths"] = iter(
                [self.merged_length(n) if token == self.audio_token else n for n, token in zip(lengths, takers)]
                + lengths[len(takers) :]
            )
            text = Qwen2_5OmniProcessor.replace_multimodal_special_tokens(*call.args, **call.kwargs)
            if not in_video:
                return text
            block = re.compile(
                f"{re.escape(self.vision_bos_token + self.audio_bos_token)}.*?"
                f"{re.escape(self.audio_eos_token + self.vision_eos_token)}",
                flags=re.DOTALL,
            )
            chunk = int(arguments["position_id_per_seconds"] * arguments["seconds_per_chunk"])
            return [block.sub(lambda match: self._merge_chunks(match.group(), chunk), sample) for sample in text]

    def _duration_limit(self) -> tuple[str, str]:
        return "Qwen2.5-Omni's feature extractor", "Cut it into clips of at most that length, each with its own audio."

    def replace_audio_token(self, audio_inputs: dict, audio_idx: int, **kwargs) -> str:
        """The placeholder run for clip `audio_idx`: `merged_length(N)` audio tokens, where `N` is its entry of
        `audio_inputs["num_audio_tokens"]` (`[num_clips]`, the unmerged counts)."""
        return self.audio_token * self.merged_length(int(audio_inputs["num_audio_tokens"][audio_idx]))

    def replace_video_with_audio_token(self, *args: Any, **kwargs: Any) -> str:
        """Upstream's run of a video with its audio, interleaved per `seconds_per_chunk`; with a merge setting each
        audio chunk of `n` placeholders holds `merged_length(n)` (module docstring)."""
        run = super().replace_video_with_audio_token(*args, **kwargs)
        if self.merge_config is None:
            return run
        return self._merge_chunks(run, int(kwargs["position_id_per_seconds"] * kwargs["seconds_per_chunk"]))

    def _merge_chunks(self, run: str, chunk: int) -> str:
        """`run`, one video interleaved with its audio, with each audio chunk of `n` placeholders (`chunk` tokens,
        the last one fewer; past the video's end they follow one another) cut to `merged_length(n)`."""
        token = self.audio_token
        pattern = re.compile(f"(?:{re.escape(token)})+")
        lengths = [len(match) // len(token) for match in pattern.findall(run)]
        merged = iter(merged_chunk_runs(lengths, chunk, self.merged_length))
        return pattern.sub(lambda _: token * next(merged), run)
