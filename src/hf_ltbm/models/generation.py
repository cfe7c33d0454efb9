"""`AudioTokenMergeGenerationMixin`: the mixin in front of a backbone's `*ForConditionalGeneration`.

Its merging forward runs the base model's (`hf_ltbm.models.model`), then the LM head on the kept positions and the
loss on the compacted labels; its generation hooks keep the attention mask, positions and size bias in step with a KV
cache that holds fewer positions than `input_ids` after a compacting prefill, and repeat a row's audio units as a
block for beam search. What differs between backbones is asked of the hooks (`hf_ltbm.models.hooks.GenerationHooks`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin

from .. import compat
from ..compat import cache_arguments, cache_field, output_cache, slice_logits_to_keep
from ..config import MergeSetting
from .compaction import generation_position_ids
from .hooks import GenerationHooks
from .outputs import AudioTokenMergeCausalLMOutput, AudioTokenMergeModelOutput
from .setting import UNSET, SettingAccess, init_setting

__all__ = ["AudioTokenMergeGenerationMixin"]


#: The fields a merging head's `_merging_forward` sets itself; other fields of its output come from the base model's.
_HEAD_FIELDS = frozenset(
    {"loss", "logits", "hidden_states", "attentions", "attention_mask", "position_ids", *compat.CACHE_NAMES}
    | {"audio_hidden_states", "audio_token_counts", "key_log_sizes"}
)


def _compaction_conflicts(kwargs: dict[str, Any], generation_config: Any) -> list[str]:
    """What a `generate()` call (its keyword arguments and generation config) asks for that a prompt compacted at
    prefill cannot serve: assisted decoding, a filled KV cache, chunked prefill."""
    problems = []
    if (
        kwargs.get("assistant_model") is not None
        or kwargs.get("prompt_lookup_num_tokens") is not None
        or (getattr(generation_config, "prompt_lookup_num_tokens", None) is not None)
    ):
        problems.append("assisted decoding")
    if any(cache.get_seq_length() > 0 for cache in cache_arguments(kwargs)):
        problems.append("reusing a filled KV cache")
    if kwargs.get("prefill_chunk_size") or getattr(generation_config, "prefill_chunk_size", None):
        problems.append("chunked prefill")
    return problems


class AudioTokenMergeGenerationMixin(GenerationHooks, SettingAccess):
    """Mixin for a backbone's `*ForConditionalGeneration`. Class attributes a backbone sets:

    - `_upstream_class`, `_model_class` (the merging base model), `_pretrained_base` (the upstream
      `*PreTrainedModel`); `_audio_mask_name` comes from the family's declaration (`Backbone.classes`).

    `__init__` builds the upstream modules (`model`, `lm_head`) with the merging base model in place of the upstream
    one. `generate()` works with prompts from the merging processor (`M_u` placeholders per unit) and from a stock
    processor (`N_u` per unit, compacted at prefill). For the latter, assisted decoding (`assistant_model`,
    `prompt_lookup_num_tokens`), chunked prefill (`prefill_chunk_size`) and a filled KV cache (`cache` /
    `past_key_values`) raise a `ValueError`, because the sequence shrinks inside the model and no longer lines up
    with `input_ids`. The hooks a backbone may override are declared, with their defaults, by `GenerationHooks` in
    `hf_ltbm.models.hooks`.
    """

    _merging_parameters = SettingAccess._merging_parameters | {"logits_to_keep"}
    _forward_doc = (
        "Upstream `{upstream}.forward` (same signature) when merging is off; with merging, the loss is computed on "
        "the compacted labels and the output (`AudioTokenMergeCausalLMOutput`) describes the sequence the KV cache "
        "holds."
    )
    #: As `AudioTokenMergeModelMixin._model_output_type`, for the head (`AudioTokenMergeCausalLMOutput`, upstream's).
    _head_output_type: type = AudioTokenMergeCausalLMOutput
    _head_output_fields: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        upstream = getattr(cls, "_upstream_class", None)
        if upstream is not None:
            cls._head_output_type = compat.output_class(AudioTokenMergeCausalLMOutput, upstream.forward)
            cls._head_output_fields = frozenset(field.name for field in dataclasses.fields(cls._head_output_type))

    def __init__(self, config, audio_token_merge: MergeSetting = UNSET) -> None:
        # Same modules as the upstream __init__, with the merging base model in place of the upstream one.
        init_setting(config, audio_token_merge)
        self._pretrained_base.__init__(self, config)
        self.model = self._model_class(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()
        self.audio_token_merge  # noqa: B018  (parsed now, not in a forward that `torch.compile` traces)

    def set_audio_token_merge(self, value: MergeSetting) -> None:
        """Changes the merge setting of a loaded model (`None` turns merging off); validated against the audio
        encoder before it is stored. Shared with the base model (both read `config.audio_token_merge`)."""
        self.model.set_audio_token_merge(value)
        self.audio_token_merge  # noqa: B018  (parsed now, not in a forward that `torch.compile` traces)

    def get_audio_features(self, *args: Any, **kwargs: Any):
        """The base model's `get_audio_features`, with upstream's arguments (`input_features [U, num_mel_bins,
        frames]`, the backbone's per-unit feature mask `[U, frames]` under its upstream name, `output_attentions`,
        `output_hidden_states`, `return_dict`): merged and projected audio tokens `pooler_output [sum(M_u), D_text]`
        out."""
        return self._merge_model.get_audio_features(*args, **kwargs)

    def audio_token_counts(
        self, feature_mask: torch.Tensor, input_ids: Optional[torch.Tensor] = None
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        """`(N_u, M_u)`: audio tokens per unit before and after merging (see the base model's method)."""
        return self.model.audio_token_counts(feature_mask, input_ids)

    # --------------------------------------------------------------------------------------------------- forward
    def _merging_forward(
        self,
        labels: Optional[torch.LongTensor] = None,
        logits_to_keep: int | torch.Tensor = 0,
        **model_kwargs: Any,
    ) -> AudioTokenMergeCausalLMOutput:
        """The base model's merging forward (`_model_merging_forward`), then the LM head on the kept positions
        (`logits [B, L', vocab_size]`, or the last `logits_to_keep`), the loss on the compacted labels `[B, L']`
        (`_head_loss`) and the head's output (`_head_output`)."""
        outputs = self._model_merging_forward(labels=labels, **model_kwargs)
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None if labels is None else self._head_loss(logits, outputs, model_kwargs)
        return self._head_output(outputs, logits, loss)

    def _head_loss(
        self, logits: torch.Tensor, outputs: AudioTokenMergeModelOutput, model_kwargs: dict[str, Any]
    ) -> torch.Tensor:
        """`_merging_loss` of `logits [B, L', vocab_size]` against the base model's compacted `labels [B, L']`, with
        the 2D mask of that sequence; as upstream, the call's other keyword arguments (`model_kwargs` that the
        upstream forward does not name: `num_items_in_batch`, `shift_labels`, ...) go to the loss too."""
        named = compat.forward_parameters(self._upstream_class.forward)
        loss_kwargs = {key: value for key, value in model_kwargs.items() if key not in named and key != "kv_cache"}
        return self._merging_loss(logits, outputs.labels, outputs.attention_mask, **loss_kwargs)

    def _head_output(
        self, outputs: AudioTokenMergeModelOutput, logits: torch.Tensor, loss: Optional[torch.Tensor]
    ) -> AudioTokenMergeCausalLMOutput:
        """The head's output (`_head_output_type`): `loss`, `logits [B, L', vocab_size]`, and from the base model's
        `outputs` the KV cache, hidden states and attentions, the sequence's `attention_mask` / `position_ids
        [B, L']`, the merged audio tokens and counts, the size bias, and any other field the upstream head's output
        carries from its base model's (e.g. `image_outputs`)."""
        passed_on = {
            name: getattr(outputs, name, None)
            for name in self._head_output_fields - _HEAD_FIELDS
            if getattr(outputs, name, None) is not None
        }
        return self._head_output_type(
            **passed_on,
            loss=loss,
            logits=logits,
            **cache_field(output_cache(outputs)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            attention_mask=outputs.attention_mask,
            position_ids=outputs.position_ids,
            audio_hidden_states=outputs.audio_hidden_states,
            audio_token_counts=outputs.audio_token_counts,
            key_log_sizes=outputs.key_log_sizes,
        )

    # ------------------------------------------------------------------------------------------------ generation
    def generate(self, *args: Any, **kwargs: Any):
        """`GenerationMixin.generate`; with a stock-processor prompt (compacted at prefill) it refuses assisted
        decoding, chunked prefill and a filled KV cache with a `ValueError` (see the class docstring)."""
        input_ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
        if self._will_compact(input_ids, self._unit_mask(kwargs), kwargs.get("inputs_embeds")):
            problems = _compaction_conflicts(kwargs, kwargs.get("generation_config") or self.generation_config)
            if problems:
                what = " and ".join(problems)
                raise ValueError(
                    f"{what[0].upper() + what[1:]} cannot be combined with in-model compaction: these "
                    "prompts hold the unmerged number of audio placeholders, so the sequence shrinks inside the model "
                    "and no longer lines up with `input_ids`. Build the inputs with the merging processor "
                    "(`AutoProcessor.from_pretrained(..., audio_token_merge=...)`), which emits the merged count."
                )
        return super().generate(*args, **kwargs)

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        # After a compacting prefill the cache holds fewer positions than `input_ids`: continue from the sequence
        # the language model actually saw.
        if isinstance(outputs, AudioTokenMergeCausalLMOutput) and isinstance(outputs.attention_mask, torch.Tensor):
            mask = model_kwargs.get("attention_mask")
            if mask is None or mask.shape[-1] != outputs.attention_mask.shape[-1]:
                model_kwargs["attention_mask"] = outputs.attention_mask
                if model_kwargs.get("position_ids") is not None:
                    model_kwargs["position_ids"] = generation_position_ids(outputs.attention_mask)
        if isinstance(outputs, AudioTokenMergeCausalLMOutput) and outputs.key_log_sizes is not None:
            # The next step's keys: everything cached so far plus the new token(s), which are text (bias 0).
            model_kwargs["key_log_sizes"] = F.pad(outputs.key_log_sizes, (0, num_new_tokens))
        return super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )

    @compat.mirrors(GenerationMixin.prepare_inputs_for_generation)
    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Upstream `prepare_inputs_for_generation` (same signature), except that a prefill which compacts the prompt
        gets the 2D `attention_mask [B, L]` instead of a 4D mask sized for the uncompacted prompt (static and compiled
        caches)."""
        model_inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        call = compat.signature(GenerationMixin.prepare_inputs_for_generation).bind(self, *args, **kwargs).arguments
        extra = call.get("kwargs", {})
        # A compiled-cache prefill gets a 4D mask sized for the uncompacted prompt: hand the 2D mask to the language
        # model instead, which builds its own mask after compaction.
        first = bool(call.get("is_first_iteration"))
        embeds = call.get("inputs_embeds") if first else None
        if self._needs_2d_mask(first, call["input_ids"], self._unit_mask(extra), embeds):
            model_inputs["attention_mask"] = call.get("attention_mask")
        return model_inputs

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        """Repeats inputs for beam search / `num_return_sequences`, moving each row's audio units (clips or windows)
        as a block: upstream repeats them unit by unit, which scrambles rows holding several units."""
        feature_mask = self._unit_mask(model_kwargs)
        features = model_kwargs.pop("input_features", None)
        model_kwargs.pop(self._audio_mask_name, None)
        input_ids_before, embeds_before = input_ids, model_kwargs.get("inputs_embeds")
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size, is_encoder_decoder=is_encoder_decoder, input_ids=input_ids, **model_kwargs
        )
        placeholder = None
        if features is not None and feature_mask is not None and expand_size > 1:
            placeholder = self._merge_model._audio_placeholder_mask(input_ids_before, embeds_before)
        if placeholder is not None:
            with_ids = input_ids_before is not None and input_ids_before.shape[-1] == placeholder.shape[-1]
            order = self._unit_order(placeholder, feature_mask, expand_size, input_ids_before if with_ids else None)
            features, feature_mask = features[order.to(features.device)], feature_mask[order.to(feature_mask.device)]
        elif features is not None and expand_size > 1:
            features = features.repeat_interleave(expand_size, dim=0)
            feature_mask = None if feature_mask is None else feature_mask.repeat_interleave(expand_size, dim=0)
        if features is not None:
            model_kwargs["input_features"] = features
        if feature_mask is not None and self._audio_mask_name is not None:
            model_kwargs[self._audio_mask_name] = feature_mask
        return input_ids, model_kwargs
