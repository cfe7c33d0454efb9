"""`AudioTokenMergeModelMixin`: the mixin in front of a backbone's base `*Model`.

It merges the encoder output per audio unit (`get_audio_features`), writes the merged tokens into the prompt and,
when the prompt was expanded by a stock processor, compacts the sequence (drops the surplus placeholders, rebuilds the
attention mask, position ids and labels, keeps the padding side) before the language model runs. Its merging forward
is a sequence of named steps (`hf_ltbm.models.forward`); what differs between backbones is asked of the hooks
(`hf_ltbm.models.hooks.ModelHooks`). With no merge setting every method defers to the upstream class.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from .. import compat
from ..compat import cache_field, output_cache
from ..config import MergeSetting
from .compaction import PlaceholderPlan, plan_placeholders
from .forward import (
    check_compaction,
    compact_prompt,
    fill_placeholders,
    placeholder_log_sizes,
    text_key_log_sizes,
)
from .hooks import ModelHooks
from .outputs import AudioTokenMergeModelOutput, AudioTokenMergeOutput
from .setting import UNSET, SettingAccess, init_setting

__all__ = ["AudioTokenMergeModelMixin"]


class AudioTokenMergeModelMixin(ModelHooks, SettingAccess):
    """Mixin for a backbone's base `*Model`. Class attributes a backbone sets:

    - `_upstream_class`: the transformers class it extends (used for saving and registration);
    - `_audio_mask_name`: the name of the per-unit feature mask argument (`None`: none), set from the family's
      declared `Backbone.feature_mask` when its classes are made.

    The hooks it implements or overrides (at least `_run_encoder`) are declared, with their defaults, by `ModelHooks`
    in `hf_ltbm.models.hooks`.
    """

    _upstream_class: type
    _audio_mask_name: str
    _forward_doc = (
        "Upstream `{upstream}.forward` (same signature) when merging is off; otherwise the merged audio tokens "
        "replace the placeholders and, for a prompt expanded to the unmerged count, the sequence is compacted "
        "(`AudioTokenMergeModelOutput` describes the returned mask, positions and labels)."
    )
    #: The output class of the merging forward (`AudioTokenMergeModelOutput` with every field of the output class the
    #: upstream forward returns on the installed release) and its field names, set per class.
    _model_output_type: type = AudioTokenMergeModelOutput
    _model_output_fields: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        upstream = getattr(cls, "_upstream_class", None)
        if upstream is not None:  # resolved once here, not in the (compilable) forward
            cls._model_output_type = compat.output_class(AudioTokenMergeModelOutput, upstream.forward)
            cls._model_output_fields = frozenset(field.name for field in dataclasses.fields(cls._model_output_type))

    def __init__(self, config, audio_token_merge: MergeSetting = UNSET, **kwargs) -> None:
        init_setting(config, audio_token_merge)
        super().__init__(config, **kwargs)
        self._validate_audio_token_merge(self.audio_token_merge)
        self._sync_attention()

    # ------------------------------------------------------------------------------------------------ audio path
    @compat.can_return_tuple
    def get_audio_features(
        self, input_features: torch.Tensor, feature_mask: torch.Tensor, **kwargs: Any
    ) -> AudioTokenMergeOutput:
        """Encodes audio, applies the configured merge per unit (clip or 30 s window) and projects it.

        Args:
            input_features (`torch.FloatTensor` of shape `[U, num_mel_bins, frames]`): log-mel features per unit.
            feature_mask (`torch.LongTensor` of shape `[U, frames]`): valid mel frames per unit.
            output_attentions, output_hidden_states (`bool`, *optional*): return the audio encoder's attentions /
                hidden states (`attentions`, `hidden_states`), as upstream's `get_audio_features` does.
            return_dict (`bool`, *optional*): `False` returns a tuple.

        Returns:
            :class:`AudioTokenMergeOutput` (a `BaseModelOutputWithPooling`) whose `last_hidden_state` is the audio
            encoder's output as upstream returns it (`[U, T, D_audio]`), `pooler_output [sum(M_u), D_text]` the tokens
            that replace the placeholders, unit after unit, and `audio_token_counts` the `M_u`.
        """
        return self._merged_audio_features(input_features, feature_mask, **kwargs)

    def audio_token_counts(
        self, feature_mask: torch.Tensor, input_ids: Optional[torch.Tensor] = None
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        """`(N_u, M_u)`: audio tokens per unit before and after merging, without running the encoder. `input_ids`
        (the prompt) matters to backbones that merge a unit in pieces that depend on where it sits (Qwen2.5-Omni's
        audio interleaved with video)."""
        num_input = self._audio_unit_lengths(feature_mask)
        setting = self.audio_token_merge
        if setting is None:
            return num_input, num_input
        return num_input, torch.tensor(
            [setting.output_length(int(n)) for n in num_input.tolist()], dtype=torch.long, device=num_input.device
        )

    # --------------------------------------------------------------------------------------------------- forward
    def _merging_forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        input_features: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        kv_cache: Optional[Any] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        position_inputs: Optional[dict[str, Any]] = None,
        output_fields: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> AudioTokenMergeModelOutput:
        """The forward of a merging model; the per-unit feature mask arrives under the backbone's own name
        (`_audio_mask_name`), and the KV cache as `kv_cache`, whichever name the caller used
        (`compat.bind_forward`). `position_inputs` go to `_language_model_positions` (a backbone's own arguments);
        `output_fields` are fields of the upstream output a backbone fills itself (Qwen2.5-Omni's `image_outputs`),
        set where the installed release's output class has them.

        The steps (`hf_ltbm.models.forward`): the checks and the placeholder plan (`_plan_prompt_audio`), the fill
        of the merged tokens (`_prompt_audio_features`, `fill_placeholders`) with their size bias, the positions
        (`_language_model_positions`), the compaction (`compact_prompt`) and the language model
        (`_language_model_output`). Inputs `input_ids [B, L]` or `inputs_embeds [B, L, D_text]`, `input_features
        [U, num_mel_bins, frames]`; the output describes the sequence of `L'` positions the language model ran on.
        """
        feature_mask = self._unit_mask({**kwargs, "input_features": input_features})
        kwargs.pop(self._audio_mask_name, None)
        setting = self.audio_token_merge
        size_aware = setting is not None and setting.size_aware_attention
        key_log_sizes = kwargs.pop("key_log_sizes", None)  # decoding: the bias of every cached key (and the new)
        plan = self._plan_prompt_audio(input_ids, input_features, feature_mask, inputs_embeds, kv_cache, kwargs)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        audio = None
        if plan is not None:  # fill, and the size bias of the merged tokens
            audio = self._prompt_audio_features(input_features, feature_mask, input_ids, plan)
            inputs_embeds = fill_placeholders(inputs_embeds, plan.fill, audio.pooler_output)
            if size_aware:
                key_log_sizes = placeholder_log_sizes(audio.merge_result, plan.fill.to(inputs_embeds.device))
        positions = None
        if position_ids is None:
            positions = self._language_model_positions(
                input_ids, attention_mask, inputs_embeds, audio, plan, kv_cache, **(position_inputs or {})
            )
        if plan is not None and plan.compacts:
            inputs_embeds, attention_mask, position_ids, labels, key_log_sizes = compact_prompt(
                plan,
                inputs_embeds,
                attention_mask,
                position_ids,
                labels,
                key_log_sizes,
                computed_positions=positions,
                default_left=getattr(self, "padding_side", "left") == "left",
                ignore_index=self._ignore_index(),
            )
        elif positions is not None:
            position_ids = positions
        if size_aware:
            key_log_sizes = kwargs["key_log_sizes"] = text_key_log_sizes(key_log_sizes, inputs_embeds)
        return self._language_model_output(
            inputs_embeds,
            attention_mask,
            position_ids,
            labels,
            kv_cache,
            use_cache,
            audio=audio,
            key_log_sizes=key_log_sizes if size_aware else None,
            output_fields=output_fields,
            language_model_kwargs=kwargs,
        )

    def _plan_prompt_audio(
        self,
        input_ids: Optional[torch.Tensor],
        input_features: Optional[torch.Tensor],
        feature_mask: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor],
        kv_cache: Any,
        kwargs: dict[str, Any],
    ) -> Optional[PlaceholderPlan]:
        """The first step: every check that needs no weights, before the encoder and the language model run, and the
        plan that matches the prompt's audio placeholders `[B, L]` (`_audio_placeholder_mask`, from `input_ids
        [B, L]` or without them `inputs_embeds [B, L, D_text]`) to the merge units (`_merge_unit_counts` of the
        feature mask `[U, frames]`); `None` for a step without audio to fill. `kwargs` are the call's other
        arguments (a KV cache under another name, `shift_labels`), which a compacting prompt refuses."""
        placeholder = None if input_features is None else self._audio_placeholder_mask(input_ids, inputs_embeds)
        if input_features is None or placeholder is None or not bool(placeholder.any()):
            return None
        if feature_mask is None:
            raise ValueError(f"`{self._audio_mask_name}` is required with `input_features`.")
        self._check_audio_inputs(input_features, feature_mask)
        plan = plan_placeholders(
            placeholder, *self._merge_unit_counts(feature_mask, input_ids), token_name=self._placeholder_name()
        )
        if plan.compacts:
            check_compaction(kv_cache, kwargs)
        return plan

    def _language_model_output(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        position_ids: Optional[torch.Tensor],
        labels: Optional[torch.Tensor],
        kv_cache: Any,
        use_cache: Optional[bool],
        *,
        audio: Optional[AudioTokenMergeOutput],
        key_log_sizes: Optional[torch.Tensor],
        output_fields: Optional[dict[str, Any]],
        language_model_kwargs: dict[str, Any],
    ) -> AudioTokenMergeModelOutput:
        """The last step: the language model on `inputs_embeds [B, L', D_text]` with the 2D (or prepared)
        `attention_mask`, `position_ids [..., B, L']` (`None`: it numbers them) and the KV cache, and the merging
        output of that sequence: `labels [B, L']`, the merged tokens and counts of `audio`, the size bias
        `key_log_sizes [B, K]` (`None` without size-aware attention) and the backbone's `output_fields` that the
        installed release's output class has."""
        outputs = compat.call_with_cache(
            self.language_model,
            kv_cache,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **language_model_kwargs,
        )
        return self._model_output_type(
            **{name: value for name, value in (output_fields or {}).items() if name in self._model_output_fields},
            last_hidden_state=outputs.last_hidden_state,
            **cache_field(output_cache(outputs)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            attention_mask=attention_mask
            if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2
            else None,
            position_ids=position_ids,
            labels=labels,
            audio_hidden_states=None if audio is None else audio.pooler_output,
            audio_token_counts=None if audio is None else audio.audio_token_counts,
            key_log_sizes=key_log_sizes,
        )
