"""Music Flamingo: Audio Flamingo 3's sibling for music, with rotary time embeddings; one merge per 30 s window.

Upstream rotates each encoder frame by its time (the window's start plus 40 ms per frame) before the projector, and
reads the windows of each clip from the runs of `<sound>` placeholders in `input_ids`. A merged token stands for
several frames: it is rotated by the **size-weighted mean time of its members** (the mean frame index of the frames it
averages, `hf_ltbm.models.units.member_positions`), so that its time embedding says when the sound it summarises
happened. The mean is the time whose rotation best matches, in the least-squares sense for small spreads, the average
of its members' rotations; it equals the one member's time for a token that was kept alone, so at keep ratio 1.0 (and
with merging off) every position is exactly upstream's. Merging runs on the encoder features before the rotation
(`space="encoder"`, the default): similar sounds at different times stay similar. With `space="projector"` every frame
is rotated at its own time and projected, then merged.
"""

from __future__ import annotations

from typing import Any

from .audioflamingo3 import AudioFlamingo3Backbone
from .base import BackboneClasses, class_getter, register_backbone

__all__ = [
    "MusicFlamingoBackbone",
    "MusicFlamingoLTBMForConditionalGeneration",
    "MusicFlamingoLTBMModel",
    "MusicFlamingoLTBMProcessor",
]


def _build() -> BackboneClasses:
    """Makes Music Flamingo's merging classes (`MusicFlamingoBackbone.build`)."""
    from functools import partial
    from math import pi
    from typing import Optional

    import torch
    from transformers import MusicFlamingoProcessor
    from transformers.models.musicflamingo.modeling_musicflamingo import (
        MusicFlamingoForConditionalGeneration,
        MusicFlamingoModel,
        MusicFlamingoPreTrainedModel,
        apply_rotary_time_emb,
    )

    from ..compat import can_return_tuple
    from ..config import MergeSetting
    from ..models.compaction import clip_window_indices, plan_placeholders
    from ..models.generation import AudioTokenMergeGenerationMixin
    from ..models.model import AudioTokenMergeModelMixin
    from ..models.outputs import AudioTokenMergeOutput
    from ..processing import WindowedMergeProcessorMixin

    class MusicFlamingoLTBMModel(AudioTokenMergeModelMixin, MusicFlamingoModel):
        """`MusicFlamingoModel` whose language model runs on merged audio tokens (one merge per 30 s window), each
        merged token rotated at the mean time of the frames it stands for (module docstring).

        Accepts an extra `audio_token_merge` argument, stored in `config.audio_token_merge` (see
        `Qwen2AudioLTBMModel`).
        """

        _upstream_class = MusicFlamingoModel

        def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor, **kwargs: Any) -> Any:
            return self.audio_tower(input_features, input_features_mask=feature_mask, return_dict=True, **kwargs)

        @can_return_tuple
        def get_audio_features(
            self,
            input_features: torch.Tensor,
            input_features_mask: torch.Tensor,
            input_ids: torch.LongTensor,
            **kwargs,
        ):
            """Upstream `get_audio_features` when merging is off; otherwise encodes each window, merges it, rotates
            every token at its (mean) time and projects it.

            Args:
                input_features (`torch.FloatTensor` of shape `[num_windows, num_mel_bins, 3000]`): log-mel features.
                input_features_mask (`torch.LongTensor` of shape `[num_windows, 3000]`): valid mel frames per window.
                input_ids (`torch.LongTensor` of shape `[B, L]`): the prompt, with `N_w` (stock processor) or `M_w`
                    (merging processor) placeholders per window: it tells which windows belong to which clip.

            Returns:
                Merging on: `AudioTokenMergeOutput` with `pooler_output [sum(M_w), hidden_size]` (windows
                concatenated), `audio_token_counts [num_windows]` (`M_w`) and `num_input_tokens [num_windows]` (`N_w`).
            """
            if self.audio_token_merge is None:
                return MusicFlamingoModel.get_audio_features(
                    self, input_features, input_features_mask, input_ids, **kwargs
                )
            placeholder = input_ids == self.config.audio_token_id
            plan = plan_placeholders(
                placeholder, *self.audio_token_counts(input_features_mask), token_name=self._placeholder_name()
            )
            return self._prompt_audio_features(input_features, input_features_mask, input_ids, plan, **kwargs)

        def _prompt_audio_features(
            self,
            input_features: torch.Tensor,
            feature_mask: torch.Tensor,
            input_ids: Optional[torch.Tensor],
            plan: Any,
            **kwargs: Any,
        ) -> AudioTokenMergeOutput:
            num_input, num_output = self.audio_token_counts(feature_mask)
            windows = clip_window_indices(plan.placeholder, num_input if plan.compacts else num_output)
            rotate = partial(self._rotate_in_time, windows=windows.to(input_features.device))
            return self._merged_audio_features(input_features, feature_mask, before_projection=rotate, **kwargs)

        def _rotate_in_time(
            self, tokens: torch.Tensor, positions: torch.Tensor, units: torch.Tensor, windows: torch.Tensor
        ) -> torch.Tensor:
            """Upstream's rotary time embedding at fractional frame positions.

            Args:
                tokens (`torch.Tensor` of shape `[R, T', D_audio]`): encoder-space tokens of `R` units.
                positions (`torch.FloatTensor` of shape `[R, T']`): each token's frame index within its window (the
                    mean index of a merged token's members).
                units (`torch.LongTensor` of shape `[R]`): the unit (window) of each row; `windows[units]` is its index
                    within its clip.

            Upstream's angle table is linear in the frame index; a fractional index interpolates between its rows,
            which at a whole index is the row itself, so unmerged tokens get exactly upstream's cos / sin.
            """
            embedding = self.pos_emb
            inv_freq = embedding.inv_freq
            frames = self.config.audio_config.max_source_positions // 2  # encoder frames per window (750 for 30 s)
            step = self.config.audio_frame_step * 4  # seconds per encoder frame (conv stride 2, then pooling by 2)
            positions = positions.to(tokens.device)
            window = windows.to(tokens.device)[units.to(tokens.device)]
            timestamps = window.unsqueeze(1) * frames * step + positions * step
            window_starts = (window * frames * step).to(dtype=inv_freq.dtype)
            window_duration = self.config.audio_frame_step * 4 * frames
            window_positions = torch.round(window_starts / window_duration) / embedding.max_seq_len_cached
            window_freqs = torch.repeat_interleave(window_positions.unsqueeze(-1) * inv_freq, 2, dim=-1)[:, None, :]
            table = embedding.position_angles
            low = positions.floor().long().clamp(0, table.shape[0] - 1)
            high = (low + 1).clamp(max=table.shape[0] - 1)
            fraction = (positions - low).unsqueeze(-1).to(table.dtype)
            time_freqs = table[low] + fraction * (table[high] - table[low])
            window_freqs, time_freqs = torch.broadcast_tensors(window_freqs, time_freqs)
            freqs = torch.cat((window_freqs, time_freqs), dim=-1)
            freqs = freqs * (-timestamps * 2 * pi).to(freqs).unsqueeze(-1)
            return apply_rotary_time_emb(tokens, freqs.cos(), freqs.sin())

        def _placeholder_name(self) -> str:
            return "<sound>"

    class MusicFlamingoLTBMForConditionalGeneration(
        AudioTokenMergeGenerationMixin, MusicFlamingoForConditionalGeneration
    ):
        """`MusicFlamingoForConditionalGeneration` whose language model runs on merged audio tokens (per 30 s window).

        Works with prompts from the merging processor and from the stock processor (compacted at prefill). With no
        merge setting it is the upstream class.
        """

        _upstream_class = MusicFlamingoForConditionalGeneration
        _model_class = MusicFlamingoLTBMModel
        _pretrained_base = MusicFlamingoPreTrainedModel

    class MusicFlamingoLTBMProcessor(WindowedMergeProcessorMixin, MusicFlamingoProcessor):
        """`MusicFlamingoProcessor` that emits `<|sound_bos|>` + `sum_w output_length(N_w)` `<sound>` + `<|sound_eos|>`
        per clip (30 s windows `w`, as Audio Flamingo 3). Features are the upstream ones; with a merge setting only
        `input_ids` / `attention_mask` are shorter. Audio longer than `max_audio_len` raises instead of being
        truncated.

        Args:
            feature_extractor, tokenizer, chat_template, audio_token, audio_bos_token, audio_eos_token, max_audio_len:
                as for `MusicFlamingoProcessor`.
            audio_token_merge (`str`, `dict` or `AudioTokenMergeConfig`, *optional*): the model's merge setting.
        """

        _upstream_class = MusicFlamingoProcessor

        def __init__(
            self,
            feature_extractor,
            tokenizer,
            chat_template=None,
            audio_token="<sound>",
            audio_bos_token="<|sound_bos|>",
            audio_eos_token="<|sound_eos|>",
            max_audio_len=1200,
            audio_token_merge: MergeSetting = None,
        ):
            self._init_setting(audio_token_merge)
            super().__init__(
                feature_extractor,
                tokenizer,
                chat_template=chat_template,
                audio_token=audio_token,
                audio_bos_token=audio_bos_token,
                audio_eos_token=audio_eos_token,
                max_audio_len=max_audio_len,
            )

    return BackboneClasses(
        MusicFlamingoLTBMModel, MusicFlamingoLTBMForConditionalGeneration, MusicFlamingoLTBMProcessor
    )


_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<sound>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)


@register_backbone
class MusicFlamingoBackbone(AudioFlamingo3Backbone):
    """Music Flamingo (`nvidia/music-flamingo-2601-hf`): Audio Flamingo 3's 30 s windows, up to 1200 s per clip."""

    model_type = "musicflamingo"
    display_name = "Music Flamingo"
    default_checkpoint = "nvidia/music-flamingo-2601-hf"
    class_prefix = "MusicFlamingo"
    config_name = "MusicFlamingoConfig"
    processor_name = "MusicFlamingoProcessor"
    required_hooks = (
        ("transformers", "MusicFlamingoModel"),
        ("transformers", "MusicFlamingoProcessor._process_audio"),
        ("transformers", "MusicFlamingoProcessor.replace_audio_token"),
        ("transformers.models.musicflamingo.modeling_musicflamingo", "apply_rotary_time_emb"),
        ("transformers.models.musicflamingo.modeling_musicflamingo", "MusicFlamingoRotaryEmbedding"),
    )
    vllm_architectures = ()  # vLLM has no Music Flamingo model
    task_prompts = {}  # the evaluation tasks' own prompts
    listing_order = 100
    tiny_encoder_type = "audioflamingo3_encoder"
    tiny_audio_tokens = ("<sound>", "<|sound_bos|>", "<|sound_eos|>")
    tiny_chat_template = _TINY_CHAT_TEMPLATE

    build = staticmethod(_build)

    def audio_features(self, model: Any, inputs: Any) -> Any:
        """`get_audio_features` also reads the prompt (which windows belong to which clip)."""
        features = inputs["input_features"].to(model.device, model.dtype)
        mask = inputs["input_features_mask"].to(model.device)
        return model.get_audio_features(features, mask, inputs["input_ids"].to(model.device))

    def tiny_config_kwargs(self, tokenizer: Any) -> dict[str, Any]:
        return {
            "audio_bos_token_id": tokenizer.convert_tokens_to_ids("<|sound_bos|>"),
            "audio_eos_token_id": tokenizer.convert_tokens_to_ids("<|sound_eos|>"),
        }


__getattr__ = class_getter(MusicFlamingoBackbone)  # the merging classes, made on first use
