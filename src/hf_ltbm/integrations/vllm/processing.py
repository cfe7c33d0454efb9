"""What the merging vLLM processors and models add to the stock ones, shared by the backbones.

- Processor (front end): the resolved setting of a request is part of every audio item's multimodal hash (so the
  processor, encoder and prefix caches never mix settings), travels to the model as a tensor field, and each item's
  placeholder run is `M = sum over the item's units of output_length(N_u)` tokens instead of `N`, the units and their
  `N_u` counted with the backbone's unit layout (`Backbone.unit_layout`, the one the transformers processor uses) and
  sent to the model with the setting. Where vLLM writes
  the runs (Qwen2-Audio, AF3) they are written with `M` tokens; where the prompt arrives tokenised with the stock runs
  (Voxtral: mistral-common writes them), `TokenisedRunsMixin` shortens each run to `M`.
- Model (engine core): the encoder output of every unit is merged with its item's setting (`hf_ltbm.models.units`)
  and projected, and each item's units are concatenated; items without a setting take the stock path unchanged.

A backbone's adapter (`hf_ltbm.integrations.vllm.<family module>`) composes these mixins with vLLM's stock classes and
writes only how its encoder runs (`MergingModelMixin._merged_units`); `merging_processor` makes its processing info
and processor and registers them.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Optional

import torch
from torch import nn
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.processing import PromptReplacement, PromptUpdateDetails

from ...backbones import BACKBONES, Backbone
from ...config import AudioTokenMergeConfig
from ...models.units import per_item, per_unit
from .settings import FIELD, KEY, decode_items, encode, engine_setting, resolve, without_setting

__all__ = [
    "MergingModelMixin",
    "MergingProcessingInfoMixin",
    "MergingProcessorMixin",
    "TokenisedRunsMixin",
    "UNIT_TOKENS",
    "family_of",
    "merging_processor",
    "projector_skipped",
    "shortened_runs",
]

#: The multimodal field that carries each audio item's unit layout to the model: `[U_i]` encoder tokens per unit.
UNIT_TOKENS = "audio_token_merge_unit_tokens"


def family_of(cls: type) -> Backbone:
    """The backbone a vLLM adapter class serves: the family whose module names the adapter's module
    (`hf_ltbm.integrations.vllm.qwen2_audio` serves `qwen2_audio`, as `Backbone.vllm_class` names it)."""
    module = cls.__module__.rsplit(".", 1)[-1]
    for backbone in BACKBONES.values():
        if backbone.family_module == module:
            return backbone
    raise LookupError(f"{cls.__qualname__} is in {cls.__module__}, which names no hf-ltbm backbone.")


def merging_processor(processor: type, info: type, dummy_inputs: type, *front: type) -> Callable[[type], type]:
    """Class decorator of an adapter's merging model `<Prefix>ForConditionalGeneration`: makes its processing info
    (`<Prefix>ProcessingInfo`: `MergingProcessingInfoMixin` in front of the stock `info`) and its multimodal processor
    (`<Prefix>MultiModalProcessor`: `front` mixins, then `MergingProcessorMixin`, in front of the stock `processor`)
    in the model's module, and registers them with vLLM's multimodal registry for the model."""

    def decorate(model: type) -> type:
        prefix, module = model.__name__.removesuffix("ForConditionalGeneration"), model.__module__
        made = {}
        for suffix, bases, stock in (
            ("ProcessingInfo", (MergingProcessingInfoMixin, info), info),
            ("MultiModalProcessor", (*front, MergingProcessorMixin, processor), processor),
        ):
            doc = f"vLLM's `{stock.__name__}` with hf-ltbm's mixins in front (`hf_ltbm.integrations.vllm.processing`)."
            made[suffix] = type(prefix + suffix, bases, {"__module__": module, "__doc__": doc})
            setattr(sys.modules[module], prefix + suffix, made[suffix])
        register = MULTIMODAL_REGISTRY.register_processor
        return register(made["MultiModalProcessor"], info=made["ProcessingInfo"], dummy_inputs=dummy_inputs)(model)

    return decorate


def _rows(value: Any) -> list[list[int]]:
    """The rows of a batched field (a `[items, U]` tensor, or a list of `[U_i]` tensors) as lists of ints."""
    return [[int(n) for n in row] for row in value]


def _with_count(update: Any, count: Callable[[int], Optional[int]]) -> Any:
    """`update` (an audio `PromptReplacement`) whose run for item `i` holds `count(i)` placeholders (`None`:
    unchanged); the updates of other modalities (Qwen2.5-Omni's images and videos) pass unchanged."""
    if not isinstance(update, PromptReplacement) or update.modality != "audio":
        return update
    original = update.replacement

    def replacement(item_idx: int) -> Any:
        content = original(item_idx) if callable(original) else original  # the stock checks (e.g. too short) run
        merged = count(item_idx)
        if merged is None:
            return content
        if isinstance(content, PromptUpdateDetails):
            token = content.full[0]
            return PromptUpdateDetails.select_token_id([token] * merged, embed_token_id=token)
        return [content[0]] * merged

    return dataclasses.replace(update, replacement=replacement)


class MergingProcessingInfoMixin:
    """In front of a stock `BaseProcessingInfo`: the Hugging Face processor is loaded without the merge setting."""

    def get_hf_processor(self, **kwargs: object) -> Any:
        return super().get_hf_processor(**without_setting(kwargs))

    def get_merge_config(self) -> Any:
        """The config that holds the served model's `audio_token_merge` (by default the model's Hugging Face
        config)."""
        return self.get_hf_config()


class MergingProcessorMixin:
    """In front of a stock `BaseMultiModalProcessor` (see the module docstring)."""

    def _item_unit_lengths(self, out_mm_data: Mapping[str, Any], item_idx: int) -> list[int]:
        """The encoder tokens `N_u` of each unit of audio item `item_idx`, as the backbone's unit layout counts them
        (`UNIT_TOKENS`)."""
        return _rows(out_mm_data[UNIT_TOKENS][item_idx : item_idx + 1])[0]

    def _merge_setting(self, mm_kwargs: Mapping[str, object]) -> Optional[AudioTokenMergeConfig]:
        return resolve(self.info.ctx.get_merged_mm_kwargs(mm_kwargs), self.info.get_merge_config())

    def _get_mm_hashes(self, inputs: Any) -> Any:
        setting = self._merge_setting(inputs.hf_processor_mm_kwargs)
        kwargs = without_setting(inputs.hf_processor_mm_kwargs)
        if setting is not None:  # no setting: the stock hash
            kwargs[KEY] = setting.to_dict()
        return super()._get_mm_hashes(dataclasses.replace(inputs, hf_processor_mm_kwargs=kwargs))

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> Any:
        return super()._call_hf_processor(hf_data, without_setting(hf_kwargs))

    def _postprocess_hf_mm_data(
        self, mm_data: Mapping[str, object], hf_processor_mm_kwargs: Mapping[str, object], processed_data: Any
    ) -> Any:
        processed = super()._postprocess_hf_mm_data(mm_data, hf_processor_mm_kwargs, processed_data)
        setting = self._merge_setting(hf_processor_mm_kwargs)
        audio = mm_data.get("audio")
        if audio is None:
            if setting is not None and "audio_embeds" in processed:
                raise ValueError(
                    f"`{KEY}` ({setting}) cannot merge precomputed `audio_embeds`: pass audio, or turn merging off "
                    f"for this request with mm_processor_kwargs={{'{KEY}': None}}."
                )
            return processed
        family_of(type(self)).check_setting(setting)  # before the engine runs anything
        clips = list(audio) if isinstance(audio, (list, tuple)) else [audio]
        processed.update(self._audio_item_data(setting, hf_processor_mm_kwargs, clips))
        return processed

    #: The tensor fields `_audio_item_data` adds, batched over the audio items.
    _audio_item_fields: tuple[str, ...] = (FIELD, UNIT_TOKENS)

    def _audio_item_data(
        self, setting: Optional[AudioTokenMergeConfig], hf_processor_mm_kwargs: Mapping[str, object], clips: list
    ) -> dict[str, Any]:
        """The fields each of a request's audio `clips` (waveforms at the feature extractor's rate) carries to the
        model, one row per item: the request's resolved setting (`FIELD`) and the encoder tokens of each of the
        clip's units (`UNIT_TOKENS`, `[U_i]`). A backbone that needs more adds them here and to
        `_audio_item_fields`."""
        processor = self.info.get_hf_processor(**without_setting(hf_processor_mm_kwargs))
        layout = family_of(type(self)).unit_layout(processor)
        return {
            FIELD: encode(setting)[None].expand(len(clips), -1).clone(),
            UNIT_TOKENS: [torch.tensor(layout.tokens(len(clip)), dtype=torch.long) for clip in clips],
        }

    def _get_mm_fields_config(self, hf_inputs: Any, hf_processor_mm_kwargs: Mapping[str, object]) -> Any:
        config = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        for field in self._audio_item_fields:
            if field in hf_inputs:
                config[field] = MultiModalFieldConfig.batched("audio", keep_on_cpu=True)
        return config

    def _get_prompt_updates(
        self, mm_items: Any, hf_processor_mm_kwargs: Mapping[str, object], out_mm_kwargs: Any
    ) -> Sequence[Any]:
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        data = out_mm_kwargs.get_data()
        if FIELD not in data:
            return updates
        settings = decode_items(data[FIELD], len(data[FIELD]))

        def count(item_idx: int) -> Optional[int]:
            setting = settings[item_idx]
            if setting is None:
                return None
            units = self._item_unit_lengths(data, item_idx)
            return sum(setting.output_length(int(n)) for n in units)

        return [_with_count(update, count) for update in updates]


def shortened_runs(prompt_ids: Sequence[int], token_id: int, counts: Sequence[int]) -> list[int]:
    """`prompt_ids` whose `i`-th run of consecutive `token_id`s keeps its first `counts[i]` tokens.

    Args:
        prompt_ids (`list[int]` of length `L`): a tokenised prompt with one run of placeholders per item.
        token_id (`int`): the placeholder id; counts (`list[int]`): the placeholders each item's run keeps.

    Returns:
        The prompt, `L - sum(run_i - counts[i])` ids.

    Raises:
        ValueError: the prompt does not hold one run per item, or a run is shorter than its count.
    """
    ids = torch.tensor(list(prompt_ids), dtype=torch.long)
    is_token = ids == token_id
    previous = torch.cat([torch.zeros(1, dtype=torch.bool), is_token[:-1]])
    run = torch.cumsum(is_token & ~previous, 0) - 1  # run index of each placeholder
    lengths = torch.bincount(run[is_token])
    wanted = torch.tensor(list(counts), dtype=torch.long)
    if lengths.shape[0] != wanted.shape[0] or bool((lengths < wanted).any()):
        raise ValueError(
            f"The prompt holds placeholder runs (token {token_id}) of {lengths.tolist()} tokens for "
            f"{wanted.shape[0]} audio items that take {wanted.tolist()}: pass the prompt as the chat template (e.g. "
            "mistral-common) writes it, one run per audio item."
        )
    starts = torch.cumsum(lengths, 0) - lengths  # where each run starts among the placeholders
    position = torch.cumsum(is_token.long(), 0) - 1 - starts[run.clamp(min=0)]  # index within its run
    keep = ~is_token | (position < wanted[run.clamp(min=0)])
    return ids[keep].tolist()


class TokenisedRunsMixin:
    """In front of a stock `BaseMultiModalProcessor` whose prompts arrive tokenised with the stock placeholder runs
    (its `_maybe_apply_prompt_updates` only locates them): each item's run is shortened to the count its prompt
    update holds (`M` under a setting) before they are located. A prompt that already holds as many placeholders as
    the updates (no setting: the stock prompt) passes unchanged."""

    def _maybe_apply_prompt_updates(self, mm_items: Any, mm_res: Any) -> Any:
        prompt_ids = mm_res.prompt_ids
        for items in mm_res.prompt_updates.values():
            if not items:
                continue
            token = items[0][0].content.full[0]
            counts = [len(updates[0].content.full) for updates in items]
            if prompt_ids.count(token) != sum(counts):
                prompt_ids = shortened_runs(prompt_ids, token, counts)
        return super()._maybe_apply_prompt_updates(mm_items, mm_res._replace(prompt_ids=prompt_ids))


@contextmanager
def projector_skipped(model: nn.Module) -> Iterator[None]:
    """Inside the block, `model.multi_modal_projector` is the identity: the stock audio path then returns encoder
    states, which are merged before (or after) the real projector runs."""
    projector = model.multi_modal_projector
    model.multi_modal_projector = nn.Identity()
    try:
        yield
    finally:
        model.multi_modal_projector = projector


class MergingModelMixin:
    """In front of a stock vLLM audio model: validates the served setting at engine start and merges each item's
    audio with the setting its request resolved to."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        engine_setting(self._merge_config(vllm_config))  # a setting vLLM cannot serve fails the engine start

    def _merge_config(self, vllm_config: Any) -> Any:
        """The config that holds the served model's `audio_token_merge` (by default the model's config)."""
        return self.config

    def _merged_units(
        self, audio_input: Any, settings: list[Optional[AudioTokenMergeConfig]]
    ) -> Sequence[torch.Tensor]:
        """The embeddings of each unit `[M_u, D_text]` of the batch's audio items, unit after unit, under its
        setting (one per unit): run the encoder, then `hf_ltbm.models.units.merge_units`."""
        raise NotImplementedError

    def _merged_audio(
        self, audio_input: Any, settings: list[Optional[AudioTokenMergeConfig]], units: list[int]
    ) -> tuple[torch.Tensor, ...]:
        """The embeddings of each audio item `[M_i, D_text]` under its setting: its `units[i]` units' merged tokens
        concatenated."""
        return per_item(self._merged_units(audio_input, per_unit(settings, units)), units)

    def embed_multimodal(self, **kwargs: object) -> Any:
        encoded, unit_tokens = kwargs.pop(FIELD, None), kwargs.pop(UNIT_TOKENS, None)
        audio_input = self._parse_and_validate_audio_input(**kwargs)
        if audio_input is None:  # another modality (Qwen2.5-Omni's images and videos): the stock path
            return super().embed_multimodal(**kwargs)
        settings = [] if encoded is None else decode_items(encoded, len(encoded))
        if audio_input["type"] == "audio_embeds" or all(setting is None for setting in settings):
            return self._process_audio_input(audio_input)
        return self._merged_audio(audio_input, settings, [len(row) for row in _rows(unit_tokens)])
