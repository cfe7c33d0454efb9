"""The outputs of the merging models: `get_audio_features` (`AudioTokenMergeOutput`), the base model
(`AudioTokenMergeModelOutput`) and the head (`AudioTokenMergeCausalLMOutput`). Each extends the upstream output class
it stands for with hf-ltbm's fields only; a merging class derives the class it returns from these and the one its
upstream forward names (`compat.output_class`), so that it carries every upstream field too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast

from ..merging import MergeResult

__all__ = [
    "AudioTokenMergeCausalLMOutput",
    "AudioTokenMergeModelOutput",
    "AudioTokenMergeOutput",
    "encoder_output_options",
]


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
