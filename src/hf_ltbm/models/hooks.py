"""The hook protocol between the shared merging machinery and a backbone: what a backbone's model classes provide or
may override, one method per hook, with the default the mixins inherit.

A backbone's base `*Model` mixes in `AudioTokenMergeModelMixin` (which derives from `ModelHooks`), its
`*ForConditionalGeneration` `AudioTokenMergeGenerationMixin` (from `GenerationHooks`); both derive from
`AudioTokenMergeHooks`. Everything else (setting storage, the merging forward's steps, generation) calls these hooks
and nothing backbone-specific. Shapes: `B` prompts of length `L`, `U` audio units (a clip, or a 30 s window) of
`frames` mel frames each, `N_u` / `M_u` audio tokens of unit `u` before / after merging.

Required (no usable default):

- class attributes `_upstream_class` (both classes), `_model_class` and `_pretrained_base` (the head);
  `_audio_mask_name` (both) is set from the declaration's `Backbone.feature_mask` when the classes are made;
- `ModelHooks._run_encoder`, unless the backbone overrides `_merged_audio_features`, its only caller (Qwen2.5-Omni's
  packed encoder);
- a `forward` decorated with `compat.mirrors(<upstream>.forward)` that returns `self._dispatch_forward(super().forward,
  args, kwargs)`, on both classes (upstream's signature is what `generate()` validates against).

Every other hook is optional: `REQUIRED_HOOKS` and `OPTIONAL_HOOKS` list them by class. Public methods a backbone may
override as well (`get_audio_features` under upstream's argument names, `audio_token_counts`) are documented on the
mixins. The classes are plain bases (no metaclass), so that they combine with upstream's model classes, and a head
that holds the base model's methods itself (Qwen2.5-Omni's thinker on transformers 5.19) mixes in both.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

from ..layout import tokens_for_frames
from .compaction import expanded_order, plan_placeholders
from .outputs import AudioTokenMergeModelOutput, AudioTokenMergeOutput, encoder_output_options
from .units import capture_merge_inputs, merge_inputs_at_token_rate, merge_units, stacked_tokens

__all__ = ["OPTIONAL_HOOKS", "REQUIRED_HOOKS", "AudioTokenMergeHooks", "GenerationHooks", "ModelHooks"]


class AudioTokenMergeHooks:
    """The hooks of both merging classes, the base model and its head."""

    #: The transformers class the merging class extends (saving, registration, its forward's signature and output).
    _upstream_class: type
    #: The upstream name of the per-unit feature mask argument; `None` for a backbone whose units are always whole
    #: windows and that takes no mask (Voxtral): every mel frame of every unit is then valid.
    _audio_mask_name: Optional[str]
    #: The family's declaration (`hf_ltbm.backbones.Backbone`), set when its classes are made: the defaults read its
    #: declared facts (`stacked_frames`, `mel_frames_per_token`).
    _backbone: Any

    def _merging_forward(self, **arguments: Any) -> ModelOutput:
        """The forward with merging on, on the arguments of the upstream forward bound by name
        (`compat.bind_forward`; the KV cache as `kv_cache`). The mixins provide it; a backbone with more inputs
        (images, videos) embeds them and calls `super()._merging_forward`."""
        raise NotImplementedError

    def _token_mask(
        self, token_id: int, input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor]
    ) -> Optional[torch.Tensor]:
        """`[B, L]` bool: where `token_id` sits in the prompt, read from `input_ids`, or where they are missing (or
        empty, as `generate()` passes them with `inputs_embeds`) from `inputs_embeds [B, L, D]` by comparing each
        position with the token's embedding, as upstream's `get_placeholder_mask` does; `None` without either."""
        if input_ids is not None and (inputs_embeds is None or input_ids.shape[-1] == inputs_embeds.shape[1]):
            return input_ids == token_id
        if inputs_embeds is None:
            return None
        token = torch.full((), token_id, dtype=torch.long, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(token).to(inputs_embeds.dtype)).all(-1)

    def _audio_placeholder_mask(
        self, input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor]
    ) -> Optional[torch.Tensor]:
        """`[B, L]` bool: the audio placeholders of a prompt whose audio upstream inserts; `None` for a prompt whose
        audio upstream leaves unused. Default, upstream's rule for Audio Flamingo 3, Music Flamingo and Voxtral: the
        audio goes in where `input_ids [B, L]` hold the placeholder, and a prompt given as `inputs_embeds [B, L, D]`
        alone (or with empty `input_ids`, as `generate()` passes it) gets none (Qwen2-Audio overrides it: none
        whenever `inputs_embeds` is given). Backbones whose upstream finds the placeholders in `inputs_embeds` by
        comparing each position with the placeholder's embedding (Qwen2.5-Omni's `get_placeholder_mask`) use
        `_token_mask`."""
        if input_ids is None or (inputs_embeds is not None and input_ids.shape[-1] != inputs_embeds.shape[1]):
            return None
        return input_ids == self.config.audio_token_id


class ModelHooks(AudioTokenMergeHooks):
    """The hooks of a merging base `*Model`, in the order the merging forward calls them. The defaults use the
    upstream model's `audio_tower`, `multi_modal_projector` and `get_input_embeddings`, and the mixin's
    `audio_token_counts`."""

    # ------------------------------------------------------------------------------------------------ encoder
    def _audio_unit_lengths(self, feature_mask: torch.Tensor) -> torch.LongTensor:
        """Audio tokens per unit `[U]` (`N_u`) before merging, from the per-unit feature mask `[U, frames]`. Default:
        the encoder's `_get_feat_extract_output_lengths`; for a backbone that stacks encoder frames into tokens
        (`Backbone.stacked_frames`, Voxtral and GLM-ASR) the declared `mel_frames_per_token`
        (`layout.tokens_for_frames`, upstream's arithmetic)."""
        if self._backbone.stacked_frames > 1:
            return tokens_for_frames(feature_mask.sum(-1).long(), self._backbone.mel_frames_per_token)
        _, lengths = self.audio_tower._get_feat_extract_output_lengths(feature_mask.sum(-1).long())
        return lengths

    def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor, **kwargs: Any) -> BaseModelOutput:
        """Required. Runs the audio encoder exactly as upstream does on `input_features [U, num_mel_bins, frames]`
        with the feature mask `[U, frames]` and `kwargs` (`output_attentions`, `output_hidden_states`); returns its
        output as upstream's `get_audio_features` does (`last_hidden_state [U, T, D_audio]`, `hidden_states`,
        `attentions`)."""
        raise NotImplementedError

    def _token_states(self, encoded: BaseModelOutput) -> torch.Tensor:
        """The encoder output at the audio-token rate, `[U, T, D_audio]`: what is merged and projected. Default: its
        `last_hidden_state`, with each `Backbone.stacked_frames` consecutive frames concatenated into one token
        (`[U, T_frames / s, s * D_audio]`, as Voxtral's and GLM-ASR's projectors read it) where that is above 1."""
        return stacked_tokens(encoded.last_hidden_state, self._backbone.stacked_frames)

    def _merge_inputs_at_token_rate(self, inputs: Any) -> Any:
        """Encoder keys `[U, T, D_key]` / attention scores `[U, T]` (a `MergeInputs` from `capture_merge_inputs`,
        pooled by 2 from the encoder's frames, as Whisper pools its output) at this backbone's token rate. Default:
        as they are, or pooled to the stacked tokens (`merge_inputs_at_token_rate`) where `Backbone.stacked_frames`
        is above 1."""
        stacked = self._backbone.stacked_frames
        return inputs if stacked == 1 else merge_inputs_at_token_rate(inputs, stacked)

    def _unit_frames(self) -> Optional[int]:
        """The mel frames every row of `input_features` is padded to, or `None` where a unit may have any frame
        count. Default: the encoder's window (`2 * max_source_positions`: 3000, 30 s). Qwen2.5-Omni's packed encoder
        reads the valid frames only: `None`."""
        return 2 * self.config.audio_config.max_source_positions

    def _check_audio_inputs(self, input_features: torch.Tensor, feature_mask: torch.Tensor) -> None:
        """Raises a `ValueError` naming the tensor, its shape and the expected one when the audio inputs cannot be
        encoded: `input_features [U, num_mel_bins, frames]` with the encoder's mel bins and `_unit_frames`, and a
        feature mask `[U, frames]` with one row per unit. Runs before any weights."""
        window, bins = self._unit_frames(), self.config.audio_config.num_mel_bins
        frames = input_features.shape[-1] if window is None else window
        if input_features.dim() != 3 or tuple(input_features.shape[1:]) != (bins, frames):
            detail = "any number of frames" if window is None else "every unit padded to the encoder's window"
            raise ValueError(
                f"`input_features` must have shape [units, num_mel_bins, frames] = [U, {bins}, {frames}] ({detail}), "
                f"got {tuple(input_features.shape)}."
            )
        if tuple(feature_mask.shape) != (input_features.shape[0], frames):
            raise ValueError(
                f"`{self._audio_mask_name}` must have shape [units, frames] = [{input_features.shape[0]}, {frames}] "
                f"(one row per row of `input_features`), got {tuple(feature_mask.shape)}."
            )

    def _merged_audio_features(
        self, input_features: torch.Tensor, feature_mask: torch.Tensor, before_projection: Any = None, **kwargs: Any
    ) -> AudioTokenMergeOutput:
        """`get_audio_features` with a backbone's time-dependent step before the projector (`merge_units`):
        `input_features [U, num_mel_bins, frames]` and the feature mask `[U, frames]` in, the merged and projected
        tokens `pooler_output [sum(M_u), D_text]` out, with `audio_token_counts [U]` (`M_u`), `num_input_tokens [U]`
        (`N_u`) and the merge. Default: `_run_encoder`, `_token_states`, then the configured merge per unit. A
        backbone that rotates features in time before its projector passes `before_projection` (Music Flamingo; the
        merged token at the size-weighted mean time of its members, so that keep ratio 1.0 stays bit-identical to
        upstream); a backbone with another encoder layout overrides it (Qwen2.5-Omni: clips packed along time)."""
        setting = self.audio_token_merge
        feature_mask = feature_mask.to(input_features.device)
        num_input = self._audio_unit_lengths(feature_mask)
        with capture_merge_inputs(self.audio_tower, setting, feature_mask.sum(-1)) as merge_inputs:
            encoded = self._run_encoder(input_features, feature_mask, **encoder_output_options(kwargs))
        merge_inputs = self._merge_inputs_at_token_rate(merge_inputs)
        merged = merge_units(
            self._token_states(encoded),
            num_input,
            setting,
            self.multi_modal_projector,
            merge_inputs,
            before_projection=before_projection,
        )
        return AudioTokenMergeOutput(
            last_hidden_state=encoded.last_hidden_state,
            pooler_output=merged.tokens,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            audio_token_counts=merged.counts.to(num_input.device),
            num_input_tokens=num_input,
            merge_result=merged.result,
        )

    # ------------------------------------------------------------------------------------------------- prompt
    def _merge_unit_counts(
        self, feature_mask: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        """`(N, M)`, each `[pieces]`: tokens before and after merging per run of placeholders that one merge fills,
        in prompt order, from the feature mask `[U, frames]` and `input_ids [B, L]`. Default: the units
        (`audio_token_counts`). A backbone that merges a unit in several pieces (Qwen2.5-Omni's audio interleaved with
        video, 2 s per run of placeholders that must keep its place) returns the pieces (the placeholder plan is made
        per piece), their sum per unit from `audio_token_counts(feature_mask, input_ids)`, and merges each piece in
        `_prompt_audio_features`; its merging processor writes `merged_length(n)` placeholders per piece."""
        return self.audio_token_counts(feature_mask, input_ids)

    def _prompt_audio_features(
        self, input_features: torch.Tensor, feature_mask: torch.Tensor, input_ids: torch.Tensor, plan: Any
    ) -> AudioTokenMergeOutput:
        """The merged audio tokens `pooler_output [sum(M), D_text]` of a prompt (`input_ids [B, L]`) whose
        placeholders `plan` (`PlaceholderPlan`) matched to the merge units (`_merge_unit_counts`), from
        `input_features [U, num_mel_bins, frames]` and the feature mask `[U, frames]`. Default:
        `_merged_audio_features`. Backbones whose audio embedding depends on where the placeholders sit (Music
        Flamingo, Qwen2.5-Omni's audio in video) override it."""
        return self._merged_audio_features(input_features, feature_mask)

    def _language_model_positions(
        self,
        input_ids: Optional[torch.Tensor],
        attention_mask: Optional[torch.Tensor],
        inputs_embeds: torch.Tensor,
        audio: Optional[AudioTokenMergeOutput],
        plan: Any,
        kv_cache: Any,
        **position_inputs: Any,
    ) -> Optional[torch.Tensor]:
        """Position ids `[..., B, L]` for the prompt as it stands before compaction (`inputs_embeds [B, L, D]`, with
        the merged tokens filled in; `input_ids` and the 2D `attention_mask [B, L]` where given), compacted with it,
        when the caller gave none; `None` lets the language model number the positions. `audio` / `plan` are `None`
        in a step without audio; `position_inputs` are a backbone's own arguments (`_merging_forward`'s). Default:
        `None`. Backbones whose positions carry time (Qwen2.5-Omni's multimodal rotary ids `[3, B, L]`) override
        it, giving a merged token the size-weighted mean time of its members (keep ratio 1.0 stays bit-identical to
        upstream), together with `GenerationHooks._needs_2d_mask`."""
        return None

    def _placeholder_name(self) -> str:
        """The audio placeholder as error messages name it (e.g. `<|AUDIO|>`). Default: `"audio"`."""
        return "audio"

    def _ignore_index(self) -> int:
        """The label of a position without loss, for the labels `[B, L']` of a compacted prompt. Default: the
        config's `ignore_index`, else -100."""
        return getattr(self.config, "ignore_index", -100)


class GenerationHooks(AudioTokenMergeHooks):
    """The hooks of a merging `*ForConditionalGeneration` head."""

    #: The merging base model class the head builds as `self.model`.
    _model_class: type
    #: The upstream `*PreTrainedModel` whose `__init__` the head runs before building its modules.
    _pretrained_base: type

    @property
    def _merge_model(self) -> Any:
        """The module holding the merging base model's methods: `self.model`, or the head itself for a backbone
        whose upstream head holds the encoders and the language model directly (Qwen2.5-Omni's thinker on 5.19)."""
        return self.model

    def _model_merging_forward(self, **kwargs: Any) -> AudioTokenMergeModelOutput:
        """The merging forward of the base model (`_merge_model`): `last_hidden_state [B, L', D_text]` of the
        (compacted) sequence with its `attention_mask`, `position_ids` and `labels [B, L']`."""
        return self.model._merging_forward(**kwargs)

    def _merging_loss(
        self,
        logits: torch.Tensor,
        labels: torch.LongTensor,
        attention_mask: Optional[torch.Tensor],
        **kwargs: Any,
    ) -> torch.Tensor:
        """The loss of the merging forward, as the upstream head computes it: `logits [B, L', vocab_size]` against the
        (compacted) `labels [B, L']`; `attention_mask [B, L']` is the 2D mask of that sequence (`None` if none was
        given), and `kwargs` the call's other arguments (`num_items_in_batch`, `shift_labels`, ...). Default:
        `self.loss_function`, as Audio Flamingo 3, Music Flamingo, Voxtral and Qwen2.5-Omni do."""
        return self.loss_function(
            logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
        )

    def _will_compact(
        self,
        input_ids: Optional[torch.Tensor],
        feature_mask: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor] = None,
    ) -> bool:
        """Whether a prompt (`input_ids [B, L]`, or `inputs_embeds [B, L, D]` without them) with the feature mask
        `[U, frames]` carries the unmerged placeholder count (so the model compacts it at prefill)."""
        if self.audio_token_merge is None or feature_mask is None:
            return False
        placeholder = self._merge_model._audio_placeholder_mask(input_ids, inputs_embeds)
        if placeholder is None:
            return False
        ids = input_ids if input_ids is not None and input_ids.shape[-1] == placeholder.shape[-1] else None
        num_input, num_output = self._merge_model.audio_token_counts(feature_mask, ids)
        placeholders = int(placeholder.sum())
        return placeholders == int(num_input.sum()) != int(num_output.sum())

    def _needs_2d_mask(
        self,
        first: bool,
        input_ids: Optional[torch.Tensor],
        feature_mask: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor] = None,
    ) -> bool:
        """Whether a generation step (`first`: the prefill) needs the 2D attention mask `[B, L]` rather than a
        prepared 4D one: a prefill that compacts the prompt (`input_ids [B, L]`, or `inputs_embeds [B, L, D]` without
        them; feature mask `[U, frames]`); backbones that compute time-dependent positions from it
        (`_language_model_positions`) add their steps."""
        return first and self._will_compact(input_ids, feature_mask, inputs_embeds)

    def _unit_order(
        self,
        placeholder: torch.Tensor,
        feature_mask: torch.Tensor,
        expand_size: int,
        input_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """`[U * expand_size]`: the order that repeats each row's audio units as a block, from the prompt's audio
        placeholders `[B, L]` (`_audio_placeholder_mask`), the feature mask `[U, frames]` and its `input_ids
        [B, L]` where it has them."""
        num_input, num_output = self._merge_model.audio_token_counts(feature_mask, input_ids)
        plan = plan_placeholders(placeholder, num_input, num_output, token_name=self._merge_model._placeholder_name())
        return expanded_order(plan.unit_row, placeholder.shape[0], expand_size)


#: The hooks a backbone must provide, by the protocol class that declares them.
REQUIRED_HOOKS: dict[type, tuple[str, ...]] = {ModelHooks: ("_run_encoder",), GenerationHooks: ()}

#: The hooks with a default a backbone may override, by the protocol class that declares them (the shared ones under
#: `AudioTokenMergeHooks`).
OPTIONAL_HOOKS: dict[type, tuple[str, ...]] = {
    AudioTokenMergeHooks: ("_merging_forward", "_token_mask", "_audio_placeholder_mask"),
    ModelHooks: (
        "_audio_unit_lengths",
        "_token_states",
        "_merge_inputs_at_token_rate",
        "_unit_frames",
        "_check_audio_inputs",
        "_merged_audio_features",
        "_merge_unit_counts",
        "_prompt_audio_features",
        "_language_model_positions",
        "_placeholder_name",
        "_ignore_index",
    ),
    GenerationHooks: (
        "_merge_model",
        "_model_merging_forward",
        "_merging_loss",
        "_will_compact",
        "_needs_2d_mask",
        "_unit_order",
    ),
}
