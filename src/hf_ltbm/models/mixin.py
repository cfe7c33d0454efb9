"""The shared machinery that makes an audio-language model run its language model on merged audio tokens.

`AudioTokenMergeModelMixin` goes in front of a backbone's base `*Model`: it merges the encoder output per audio unit
(`get_audio_features`), writes the merged tokens into the prompt and, when the prompt was expanded by a stock
processor, compacts the sequence (drops the surplus placeholders, rebuilds the attention mask, position ids and
labels, keeps the padding side). `AudioTokenMergeGenerationMixin` goes in front of `*ForConditionalGeneration`: loss on
the compacted labels, and the generation hooks that keep the attention mask and positions in step with the shorter
KV cache. With no merge setting every method defers to the upstream class, so behaviour is bit-identical.

Backbone files only declare a few class attributes and implement `_run_encoder` / `_audio_unit_lengths`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPast,
    BaseModelOutputWithPooling,
    CausalLMOutputWithPast,
)

from .. import compat
from ..compat import cache_arguments, cache_field, output_cache, slice_logits_to_keep
from ..config import AudioTokenMergeConfig, MergeSetting, plain_setting
from ..merging import MergeResult
from .compaction import (
    compact_sequence,
    expanded_order,
    generation_position_ids,
    infer_left_padding,
    plan_placeholders,
)
from .size_aware import base_name, size_aware_name
from .units import capture_merge_inputs, merge_units

__all__ = [
    "AudioTokenMergeCausalLMOutput",
    "AudioTokenMergeGenerationMixin",
    "AudioTokenMergeModelMixin",
    "AudioTokenMergeModelOutput",
    "AudioTokenMergeOutput",
    "encoder_output_options",
]

_UNSET: Any = object()


@dataclass
class AudioTokenMergeOutput(BaseModelOutputWithPooling):
    """Output of `get_audio_features` on a merging model.

    Args:
        last_hidden_state (`torch.FloatTensor`): the audio encoder's output as upstream's `get_audio_features`
            returns it, `[U, T, D_audio]` per unit (Qwen2.5-Omni: the projected tokens packed over the clips).
        hidden_states, attentions: the audio encoder's, with `output_hidden_states` / `output_attentions`.
        pooler_output (`torch.FloatTensor` of shape `[sum(M_u), D_text]`): the (merged) projected audio tokens of all
            units, concatenated in unit order: what replaces the placeholders.
        audio_token_counts (`torch.LongTensor` of shape `[U]`): tokens per unit after merging (`M_u`).
        num_input_tokens (`torch.LongTensor` of shape `[U]`): tokens per unit before merging (`N_u`).
        merge_result (`MergeResult`, *optional*): the merge itself (in the configured space), one row per unit that
            has tokens (units with `N_u = 0` are left out); `None` when merging is off.
    """

    audio_token_counts: Optional[torch.LongTensor] = None
    num_input_tokens: Optional[torch.LongTensor] = None
    merge_result: Optional[MergeResult] = None


@dataclass
class AudioTokenMergeModelOutput(BaseModelOutputWithPast):
    """Base-model output with the (possibly compacted) sequence bookkeeping the language model ran on: the fields of
    `transformers.modeling_outputs.BaseModelOutputWithPast` (`last_hidden_state [B, L', D_text]`, the KV cache holding
    `L'` positions, `hidden_states`, `attentions`) plus:

    Args:
        attention_mask (`torch.LongTensor` of shape `[B, L']`): 2D mask of the sequence given to the language model.
        position_ids (`torch.LongTensor` of shape `[B, L']`, *optional*): its position ids (`None` when neither given
            nor rebuilt).
        labels (`torch.LongTensor` of shape `[B, L']`, *optional*): labels aligned with that sequence.
        audio_hidden_states (`torch.FloatTensor` of shape `[sum(M_u), D_text]`, *optional*): merged audio tokens.
        audio_token_counts (`torch.LongTensor` of shape `[U]`, *optional*): merged tokens per audio unit.
        key_log_sizes (`torch.FloatTensor` of shape `[B, K]`, *optional*): with size-aware attention, the bias
            `log(size)` of every key the cache holds after this step (0 for text and generated tokens).
    """

    attention_mask: Optional[torch.Tensor] = None
    position_ids: Optional[torch.LongTensor] = None
    labels: Optional[torch.LongTensor] = None
    audio_hidden_states: Optional[torch.FloatTensor] = None
    audio_token_counts: Optional[torch.LongTensor] = None
    key_log_sizes: Optional[torch.FloatTensor] = None


@dataclass
class AudioTokenMergeCausalLMOutput(CausalLMOutputWithPast):
    """Causal-LM output of a merging model: the fields of `transformers.modeling_outputs.CausalLMOutputWithPast`
    (`loss` on the compacted labels, `logits [B, L', vocab_size]` or the last `logits_to_keep`, the KV cache holding
    `L'` positions after prefill, `hidden_states`, `attentions`) plus the sequence the cache holds:

    Args:
        attention_mask (`torch.LongTensor` of shape `[B, L']`, *optional*): 2D mask of that sequence (compacted when
            the prompt held the unmerged placeholder count).
        position_ids (`torch.LongTensor` of shape `[B, L']`, *optional*): its position ids, when given or rebuilt.
        audio_hidden_states (`torch.FloatTensor` of shape `[sum(M_u), D_text]`, *optional*): merged audio tokens.
        audio_token_counts (`torch.LongTensor` of shape `[U]`, *optional*): merged tokens per audio unit (`M_u`).
        key_log_sizes (`torch.FloatTensor` of shape `[B, K]`, *optional*): with size-aware attention, `log(size)` of
            every key the cache holds after this step (0 for text and generated tokens).
    """

    attention_mask: Optional[torch.Tensor] = None
    position_ids: Optional[torch.LongTensor] = None
    audio_hidden_states: Optional[torch.FloatTensor] = None
    audio_token_counts: Optional[torch.LongTensor] = None
    key_log_sizes: Optional[torch.FloatTensor] = None


def encoder_output_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a `get_audio_features` (or image / video features) call that go on to the encoder: what it
    returns besides its last hidden state (`output_attentions`, `output_hidden_states`)."""
    return {name: kwargs[name] for name in ("output_attentions", "output_hidden_states") if name in kwargs}


def _store_setting(config: Any, value: MergeSetting) -> None:
    """Normalises `value` and stores it on `config` as a plain dict (or `None`)."""
    parsed = AudioTokenMergeConfig.from_value(value)
    config.audio_token_merge = None if parsed is None else parsed.to_dict()


def _init_setting(config: Any, audio_token_merge: MergeSetting) -> None:
    """At `__init__`: an explicit `audio_token_merge` wins, else whatever `from_pretrained` left on the config."""
    if audio_token_merge is not _UNSET:
        _store_setting(config, audio_token_merge)
    elif getattr(config, "audio_token_merge", None) is not None:
        _store_setting(config, config.audio_token_merge)


class _SettingAccess:
    """`audio_token_merge` read from, and written to, the model config (shared by the base model and its head), and
    the forward that runs upstream's code with merging off and the merging path otherwise."""

    config: Any
    _upstream_class: type
    #: The upstream name of the per-unit feature mask argument; `None` for a backbone whose units are always whole
    #: windows and that takes no mask (Voxtral): every mel frame of every unit is then valid.
    _audio_mask_name: Optional[str]

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`; an `audio_token_merge=` keyword is validated before anything loads and
        handed on as a plain dict, so that the model config stays JSON-serialisable (transformers logs it at INFO
        level, and a config object in it made loading fail there)."""
        if "audio_token_merge" in kwargs:
            kwargs["audio_token_merge"] = plain_setting(kwargs["audio_token_merge"])
        return super().from_pretrained(*args, **kwargs)

    #: The upstream forward parameters the merging path implements, besides the backbone's `_audio_mask_name`. A
    #: parameter that a later transformers adds to the upstream forward, given a value, makes the merging path raise
    #: (see `compat.bind_forward`); `tests/models/test_signatures.py` fails as soon as a release adds one.
    _merging_parameters: frozenset[str] = frozenset(
        {
            "input_ids",
            "input_features",
            "attention_mask",
            "position_ids",
            "inputs_embeds",
            "labels",
            "use_cache",
            "return_dict",
        }
        | set(compat.CACHE_NAMES)
    )

    @classmethod
    def merging_parameters(cls) -> frozenset[str]:
        """The upstream forward parameters the merging path of this class implements."""
        return cls._merging_parameters | ({cls._audio_mask_name} if cls._audio_mask_name else set())

    def _unit_mask(self, kwargs: dict[str, Any]) -> Optional[torch.Tensor]:
        """The per-unit feature mask `[U, frames]` of a call's keyword arguments: the backbone's own argument, or all
        ones for a backbone without one (`None` without audio)."""
        if self._audio_mask_name is not None:
            return kwargs.get(self._audio_mask_name)
        features = kwargs.get("input_features")
        if features is None:
            return None
        return torch.ones(features.shape[0], features.shape[-1], dtype=torch.long, device=features.device)

    def _dispatch_forward(self, upstream_forward: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        """`upstream_forward(*args, **kwargs)` (the upstream class's forward, bound) when merging is off, bit-identical
        to upstream; otherwise the merging path on the same arguments, bound to the upstream signature, whose output
        becomes a tuple where upstream's would (`return_dict=False`, or `config.return_dict` false)."""
        if self.audio_token_merge is None:
            return upstream_forward(*args, **kwargs)
        forward = self._upstream_class.forward
        arguments = compat.bind_forward(forward, self.merging_parameters(), (self, *args), kwargs)
        as_tuple = compat.wants_tuple(self, arguments)
        outputs = self._merging_forward(**arguments)
        return outputs.to_tuple() if as_tuple else outputs

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
        audio goes in where `input_ids` hold the placeholder, and a prompt given as `inputs_embeds` alone (or with
        empty `input_ids`, as `generate()` passes it) gets none. Backbones whose upstream finds the placeholders in
        `inputs_embeds` (Qwen2.5-Omni) use `_token_mask`."""
        if input_ids is None or (inputs_embeds is not None and input_ids.shape[-1] != inputs_embeds.shape[1]):
            return None
        return input_ids == self.config.audio_token_id

    @property
    def audio_token_merge(self) -> Optional[AudioTokenMergeConfig]:
        """The active merge setting (`None`: merging off). Stored in `config.audio_token_merge` as a plain dict."""
        value = getattr(self.config, "audio_token_merge", None)
        if isinstance(value, dict):
            # parsed once per stored dict (compared with a copy, so that an edit in place is seen): nothing is
            # serialised per call, which also keeps the forward traceable by `torch.compile(fullgraph=True)`
            cached = self.__dict__.get("_merge_cache")
            if cached is None or cached[0] is not value or cached[1] != value:
                cached = (value, copy.deepcopy(value), AudioTokenMergeConfig.from_dict(value))
                self.__dict__["_merge_cache"] = cached
            return cached[2]
        if value is not None:  # set directly on the config as a str / config object: normalise it once
            _store_setting(self.config, value)
            return self.audio_token_merge
        return None

    def set_audio_token_merge(self, value: MergeSetting) -> None:
        """Changes the merge setting of a loaded model (`None` turns merging off). See `hf_ltbm.audio_token_merge`
        for a context manager that restores the previous setting."""
        self._validate_audio_token_merge(AudioTokenMergeConfig.from_value(value))
        _store_setting(self.config, value)
        self._sync_attention()
        self.audio_token_merge  # noqa: B018  (parsed now, not in a forward that `torch.compile` traces)

    def _sync_attention(self) -> None:
        """Points the language model at the size-aware attention function when the setting asks for it, and back to
        the plain one otherwise."""
        language_model = getattr(self, "language_model", None)
        if language_model is None:
            return
        lm_config = language_model.config
        setting = self.audio_token_merge
        current = lm_config._attn_implementation
        wanted = (
            size_aware_name(current) if setting is not None and setting.size_aware_attention else base_name(current)
        )
        if wanted != current:
            lm_config._attn_implementation = wanted

    def _validate_audio_token_merge(self, setting: Optional[AudioTokenMergeConfig]) -> None:
        """Checks that this model can provide what the setting reads from its audio encoder, and the attention
        implementation size-aware attention needs."""
        if setting is None or not hasattr(self, "audio_tower"):
            return
        if setting.size_aware_attention:
            size_aware_name(self.language_model.config._attn_implementation)  # raises for flash attention
        needs = [
            what
            for what, wanted in (
                ("keys", setting.key_source == "encoder_keys"),
                ("attention scores", setting.requires_scores),
            )
            if wanted
        ]
        attn = getattr(getattr(self.audio_tower, "layers", [None])[-1], "self_attn", None)
        if needs and not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "num_heads", "scaling")):
            raise ValueError(
                f"audio_token_merge={setting} reads {' and '.join(needs)} from the last self-attention layer of the "
                f"audio encoder, but {type(self.audio_tower).__name__} has no such layer; use key_source='features' "
                "and a method that needs no scores."
            )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves like the upstream class (same weights, upstream `architectures`) plus the merge setting, with the
        weights under the keys of the released checkpoints on every transformers release (some releases double the
        language model's prefix; `compat.repair_saved_language_model_keys`), so that vLLM can serve the folder. To
        push to the Hub use `push_to_hub()`, which saves through this method."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.config.architectures = [self._upstream_class.__name__]
            self.config.save_pretrained(save_directory)
            compat.repair_saved_language_model_keys(save_directory)


class AudioTokenMergeModelMixin(_SettingAccess):
    """Mixin for a backbone's base `*Model`. Class attributes a backbone sets:

    - `_upstream_class`: the transformers class it extends (used for saving and registration);
    - `_audio_mask_name`: the name of the per-unit feature mask argument.
    """

    _upstream_class: type
    _audio_mask_name: str
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

    def __init__(self, config, audio_token_merge: MergeSetting = _UNSET, **kwargs) -> None:
        _init_setting(config, audio_token_merge)
        super().__init__(config, **kwargs)
        self._validate_audio_token_merge(self.audio_token_merge)
        self._sync_attention()

    # -------------------------------------------------------------------------------------------- backbone hooks
    def _audio_unit_lengths(self, feature_mask: torch.Tensor) -> torch.LongTensor:
        """Audio tokens per unit `[U]` before merging, from the per-unit feature mask `[U, frames]`."""
        _, lengths = self.audio_tower._get_feat_extract_output_lengths(feature_mask.sum(-1).long())
        return lengths

    def _run_encoder(self, input_features: torch.Tensor, feature_mask: torch.Tensor, **kwargs: Any) -> BaseModelOutput:
        """Runs the audio encoder exactly as upstream does, with `kwargs` (`output_attentions`,
        `output_hidden_states`); returns its output as upstream's `get_audio_features` does."""
        raise NotImplementedError

    def _token_states(self, encoded: BaseModelOutput) -> torch.Tensor:
        """The encoder output at the audio-token rate, `[U, T, D_audio]`: what is merged and projected. Default: its
        `last_hidden_state` (Voxtral concatenates 4 frames per token)."""
        return encoded.last_hidden_state

    def _merge_inputs_at_token_rate(self, inputs: Any) -> Any:
        """Encoder keys / attention scores (`capture_merge_inputs`, pooled by 2 from the encoder's frames, as Whisper
        pools its output) at this backbone's token rate. Default: as they are."""
        return inputs

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

    def _merged_audio_features(
        self, input_features: torch.Tensor, feature_mask: torch.Tensor, before_projection: Any = None, **kwargs: Any
    ) -> AudioTokenMergeOutput:
        """`get_audio_features` with a backbone's time-dependent step before the projector (`merge_units`)."""
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

    def _check_audio_inputs(self, input_features: torch.Tensor, feature_mask: torch.Tensor) -> None:
        """Raises a `ValueError` naming the tensor, its shape and the expected one when the audio inputs cannot be
        encoded: `input_features [U, num_mel_bins, frames]` with the encoder's mel bins and window length, and a
        feature mask `[U, frames]` with one row per unit."""
        audio_config = self.config.audio_config
        frames = 2 * audio_config.max_source_positions
        expected = (audio_config.num_mel_bins, frames)
        if input_features.dim() != 3 or tuple(input_features.shape[1:]) != expected:
            raise ValueError(
                f"`input_features` must have shape [units, num_mel_bins, frames] = [U, {expected[0]}, {expected[1]}] "
                f"(every unit padded to the encoder's window), got {tuple(input_features.shape)}."
            )
        if tuple(feature_mask.shape) != (input_features.shape[0], frames):
            raise ValueError(
                f"`{self._audio_mask_name}` must have shape [units, frames] = [{input_features.shape[0]}, {frames}] "
                f"(one row per row of `input_features`), got {tuple(feature_mask.shape)}."
            )

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
        set where the installed release's output class has them."""
        feature_mask = self._unit_mask({**kwargs, "input_features": input_features})
        kwargs.pop(self._audio_mask_name, None)
        setting = self.audio_token_merge
        size_aware = setting is not None and setting.size_aware_attention
        key_log_sizes = kwargs.pop("key_log_sizes", None)  # decoding: the bias of every cached key (and the new)
        audio_embeds = counts = plan = None
        # from `input_ids`, or without them from `inputs_embeds` (as upstream's `get_placeholder_mask`)
        placeholder = None if input_features is None else self._audio_placeholder_mask(input_ids, inputs_embeds)
        if input_features is not None and placeholder is not None and bool(placeholder.any()):
            # every check that needs no weights comes before the encoder and the language model run
            if feature_mask is None:
                raise ValueError(f"`{self._audio_mask_name}` is required with `input_features`.")
            self._check_audio_inputs(input_features, feature_mask)
            plan = plan_placeholders(
                placeholder, *self._merge_unit_counts(feature_mask, input_ids), token_name=self._placeholder_name()
            )
            if plan.compacts and any(c.get_seq_length() > 0 for c in cache_arguments({"cache": kv_cache, **kwargs})):
                raise ValueError(
                    "In-model compaction (a prompt with the unmerged number of audio placeholders) cannot extend a "
                    "non-empty KV cache: the cache no longer lines up with `input_ids`. Use the merging processor "
                    "(`AutoProcessor.from_pretrained(..., audio_token_merge=...)`) to reuse caches."
                )
            if plan.compacts and kwargs.get("shift_labels") is not None:
                raise ValueError(
                    "`shift_labels` cannot be combined with in-model compaction (a prompt with the unmerged number of "
                    "audio placeholders): they are aligned with the uncompacted sequence. Pass `labels`, which are "
                    "compacted with it, or build the prompt with the merging processor "
                    "(`AutoProcessor.from_pretrained(..., audio_token_merge=...)`), whose sequence is not compacted."
                )
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        audio = None
        if plan is not None:
            audio = self._prompt_audio_features(input_features, feature_mask, input_ids, plan)
            audio_embeds, counts = audio.pooler_output, audio.audio_token_counts
            fill = plan.fill.to(inputs_embeds.device)[..., None]
            inputs_embeds = inputs_embeds.masked_scatter(
                fill, audio_embeds.to(inputs_embeds.device, inputs_embeds.dtype)
            )
            if size_aware:
                key_log_sizes = self._prompt_log_sizes(audio, plan.fill.to(inputs_embeds.device))
        positions = None
        if position_ids is None:
            positions = self._language_model_positions(
                input_ids, attention_mask, inputs_embeds, audio, plan, kv_cache, **(position_inputs or {})
            )
        if plan is not None:
            if plan.compacts:
                left = infer_left_padding(attention_mask, default_left=getattr(self, "padding_side", "left") == "left")
                given_positions = position_ids is not None
                if positions is not None:  # [..., B, L] -> [..., B, L'], compacted like the embeddings
                    flat = positions.reshape(-1, *positions.shape[-2:]).permute(1, 2, 0)
                    flat = compact_sequence(plan.keep, left, flat, attention_mask)[0]
                    positions = flat.permute(2, 0, 1).reshape(*positions.shape[:-1], flat.shape[1])
                inputs_embeds, attention_mask, labels, key_log_sizes = compact_sequence(
                    plan.keep,
                    left,
                    inputs_embeds,
                    attention_mask,
                    labels,
                    ignore_index=self._ignore_index(),
                    key_log_sizes=key_log_sizes,
                )
                position_ids = generation_position_ids(attention_mask) if given_positions else None
        if positions is not None:
            position_ids = positions

        if size_aware and key_log_sizes is None and inputs_embeds is not None:  # a prompt without audio
            key_log_sizes = inputs_embeds.new_zeros(inputs_embeds.shape[:2], dtype=torch.float32)
        if size_aware:
            kwargs["key_log_sizes"] = key_log_sizes
        outputs = compat.call_with_cache(
            self.language_model,
            kv_cache,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
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
            audio_hidden_states=audio_embeds,
            audio_token_counts=counts,
            key_log_sizes=key_log_sizes if size_aware else None,
        )

    def _merge_unit_counts(
        self, feature_mask: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        """`(N, M)` per run of placeholders that one merge fills, in prompt order: the units (`audio_token_counts`).
        A backbone that merges a unit in several pieces (Qwen2.5-Omni's audio interleaved with video) returns the
        pieces, and its `_prompt_audio_features` merges them."""
        return self.audio_token_counts(feature_mask, input_ids)

    def _prompt_audio_features(
        self, input_features: torch.Tensor, feature_mask: torch.Tensor, input_ids: torch.Tensor, plan: Any
    ) -> AudioTokenMergeOutput:
        """The merged audio tokens of a prompt whose placeholders `plan` matched to the merge units
        (`_merge_unit_counts`). Backbones whose audio embedding depends on where the placeholders sit (Music Flamingo,
        Qwen2.5-Omni's audio in video) override it."""
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
        """Position ids `[..., B, L]` for the prompt as it stands before compaction (compacted with it), when the
        caller gave none; `None` lets the language model number the positions. `audio` / `plan` are `None` in a step
        without audio. Backbones whose positions carry time (Qwen2.5-Omni's multimodal rotary ids) override it."""
        return None

    def _prompt_log_sizes(self, audio: AudioTokenMergeOutput, fill: torch.Tensor) -> torch.Tensor:
        """`[B, L]` float32: `log(size)` of the merged audio token at each filled placeholder, 0 elsewhere."""
        log_sizes = torch.zeros(fill.shape, dtype=torch.float32, device=fill.device)
        result = audio.merge_result
        valid = torch.arange(result.sizes.shape[1], device=result.sizes.device)[None] < result.lengths[:, None]
        log_sizes[fill] = result.sizes[valid].float().log().to(fill.device)
        return log_sizes

    def _placeholder_name(self) -> str:
        return "audio"

    def _ignore_index(self) -> int:
        return getattr(self.config, "ignore_index", -100)


#: The fields a merging head's `_merging_forward` sets itself; other fields of its output come from the base model's.
_HEAD_FIELDS = frozenset(
    {"loss", "logits", "hidden_states", "attentions", "attention_mask", "position_ids", *compat.CACHE_NAMES}
    | {"audio_hidden_states", "audio_token_counts", "key_log_sizes"}
)


class AudioTokenMergeGenerationMixin(_SettingAccess):
    """Mixin for a backbone's `*ForConditionalGeneration`. Class attributes a backbone sets:

    - `_upstream_class`, `_model_class` (the merging base model), `_pretrained_base` (the upstream
      `*PreTrainedModel`), `_audio_mask_name`.

    `__init__` builds the upstream modules (`model`, `lm_head`) with the merging base model in place of the upstream
    one. `generate()` works with prompts from the merging processor (`M_u` placeholders per unit) and from a stock
    processor (`N_u` per unit, compacted at prefill). For the latter, assisted decoding (`assistant_model`,
    `prompt_lookup_num_tokens`), chunked prefill (`prefill_chunk_size`) and a filled KV cache (`cache` /
    `past_key_values`) raise a `ValueError`, because the sequence shrinks inside the model and no longer lines up
    with `input_ids`.
    """

    _model_class: type
    _pretrained_base: type
    _merging_parameters = _SettingAccess._merging_parameters | {"logits_to_keep"}
    #: As `AudioTokenMergeModelMixin._model_output_type`, for the head (`AudioTokenMergeCausalLMOutput`, upstream's).
    _head_output_type: type = AudioTokenMergeCausalLMOutput
    _head_output_fields: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        upstream = getattr(cls, "_upstream_class", None)
        if upstream is not None:
            cls._head_output_type = compat.output_class(AudioTokenMergeCausalLMOutput, upstream.forward)
            cls._head_output_fields = frozenset(field.name for field in dataclasses.fields(cls._head_output_type))

    def __init__(self, config, audio_token_merge: MergeSetting = _UNSET) -> None:
        # Same modules as the upstream __init__, with the merging base model in place of the upstream one.
        _init_setting(config, audio_token_merge)
        self._pretrained_base.__init__(self, config)
        self.model = self._model_class(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()
        self.audio_token_merge  # noqa: B018  (parsed now, not in a forward that `torch.compile` traces)

    @property
    def _merge_model(self) -> Any:
        """The module holding the merging base model's methods: `self.model`, or the head itself for a backbone
        whose upstream head holds the encoders and the language model directly (Qwen2.5-Omni's thinker on 5.19)."""
        return self.model

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

    def _merging_forward(
        self,
        labels: Optional[torch.LongTensor] = None,
        logits_to_keep: int | torch.Tensor = 0,
        **model_kwargs: Any,
    ) -> AudioTokenMergeCausalLMOutput:
        """The base model's merging forward, then the LM head on the kept positions and the loss on the compacted
        labels."""
        outputs = self._model_merging_forward(labels=labels, **model_kwargs)
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            # as upstream, the call's other keyword arguments go to the loss too (`num_items_in_batch`,
            # `shift_labels`, ...)
            named = compat.forward_parameters(self._upstream_class.forward)
            loss_kwargs = {key: value for key, value in model_kwargs.items() if key not in named and key != "kv_cache"}
            loss = self._merging_loss(logits, outputs.labels, outputs.attention_mask, **loss_kwargs)
        # what the upstream head's output carries from its base model's besides these (e.g. `image_outputs`)
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

    def _model_merging_forward(self, **kwargs: Any) -> AudioTokenMergeModelOutput:
        """The merging forward of the base model (`_merge_model`)."""
        return self.model._merging_forward(**kwargs)

    # ------------------------------------------------------------------------------------------------ generation
    def _will_compact(
        self,
        input_ids: Optional[torch.Tensor],
        feature_mask: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor] = None,
    ) -> bool:
        """Whether a prompt (`input_ids`, or `inputs_embeds` without them) carries the unmerged placeholder count (so
        the model compacts it at prefill)."""
        if self.audio_token_merge is None or feature_mask is None:
            return False
        placeholder = self._merge_model._audio_placeholder_mask(input_ids, inputs_embeds)
        if placeholder is None:
            return False
        ids = input_ids if input_ids is not None and input_ids.shape[-1] == placeholder.shape[-1] else None
        num_input, num_output = self._merge_model.audio_token_counts(feature_mask, ids)
        placeholders = int(placeholder.sum())
        return placeholders == int(num_input.sum()) != int(num_output.sum())

    def generate(self, *args: Any, **kwargs: Any):
        """`GenerationMixin.generate`; with a stock-processor prompt (compacted at prefill) it refuses assisted
        decoding, chunked prefill and a filled KV cache with a `ValueError` (see the class docstring)."""
        input_ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
        if self._will_compact(input_ids, self._unit_mask(kwargs), kwargs.get("inputs_embeds")):
            generation_config = kwargs.get("generation_config") or self.generation_config
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

    def _needs_2d_mask(
        self,
        first: bool,
        input_ids: Optional[torch.Tensor],
        feature_mask: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor] = None,
    ) -> bool:
        """Whether a generation step (`first`: the prefill) needs the 2D attention mask rather than a prepared 4D
        one: a prefill that compacts the prompt (`input_ids`, or `inputs_embeds` without them); backbones that
        compute positions from it add their steps."""
        return first and self._will_compact(input_ids, feature_mask, inputs_embeds)

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

    def _unit_order(
        self,
        placeholder: torch.Tensor,
        feature_mask: torch.Tensor,
        expand_size: int,
        input_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """`[U * expand_size]`: the order that repeats each row's audio units as a block, from the prompt's audio
        placeholders `[B, L]` (`_audio_placeholder_mask`) and its `input_ids` where it has them."""
        num_input, num_output = self._merge_model.audio_token_counts(feature_mask, input_ids)
        plan = plan_placeholders(placeholder, num_input, num_output, token_name=self._merge_model._placeholder_name())
        return expanded_order(plan.unit_row, placeholder.shape[0], expand_size)
