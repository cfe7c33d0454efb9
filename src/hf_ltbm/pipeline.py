"""The "audio-text-to-text" pipeline: audio (+ a prompt or a chat) in, generated text out, for Qwen2-Audio and Audio
Flamingo 3 with or without audio-token merging.

```python
import hf_ltbm
from transformers import pipeline

pipe = pipeline("audio-text-to-text", model="Qwen/Qwen2-Audio-7B-Instruct",
                model_kwargs={"audio_token_merge": {"method": "ltbm", "keep_ratio": 0.5}})
pipe("clip.wav", text="Describe the audio.")                     # [{"generated_text": ..., ...}]
pipe(["a.wav", "b.flac"], text="Describe the audio.", batch_size=2)
pipe(messages)                                                      # a chat with {"type": "audio", "path": ...} parts
pipe("clip.wav", text="...", audio_token_merge="global")          # another setting for this call only
```

transformers (5.19 to 5.24) has no task of this name; `hf_ltbm` registers it on import only while that stays true.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch
from transformers import GenerationConfig, Pipeline
from transformers.utils import logging

from .audio import check_audio, load_audio
from .backbones import Backbone, backbone_for, units_per_clip
from .compat import prepare_pipeline_generate_kwargs
from .context import audio_token_merge as _merge_setting
from .prompt import DEFAULT_PROMPT

logger = logging.get_logger(__name__)

__all__ = ["DEFAULT_PROMPT", "TASK", "AudioTextToTextPipeline", "build_prompt", "register_pipeline"]

#: The pipeline task name registered with transformers (only where transformers has none of its own).
TASK = "audio-text-to-text"

_UNSET: Any = object()


@dataclass
class _Sample:
    """One prompt: `messages` (a chat) or `text` (a plain prompt), and its audio clips in prompt order."""

    audio: list = field(default_factory=list)
    text: Optional[str] = None
    messages: Optional[list] = None

    @property
    def shown(self) -> Union[str, list]:
        return self.messages if self.messages is not None else self.text


class _Batch(list):
    """A list of `_Sample`s processed together (one `generate()` call)."""


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and "role" in value and "content" in value


def _is_chat(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_message(m) for m in value)


def _audio_parts(messages: list) -> list:
    """The audio sources of a chat's `{"type": "audio", ...}` parts, in order."""
    sources = []
    for message in messages:
        content = message["content"]
        for part in content if isinstance(content, (list, tuple)) else []:
            if isinstance(part, dict) and part.get("type") == "audio":
                key = next((k for k in ("path", "url", "audio", "array") if part.get(k) is not None), None)
                if key is None:
                    raise ValueError(
                        "An audio part of a chat needs a 'path', 'url' or 'audio' (array) entry, "
                        f"got keys {sorted(part)}."
                    )
                sources.append(part[key])
    return sources


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be a positive integer, got {value!r} of type {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def build_prompt(processor: Any, text: str, num_audio: int = 1) -> str:
    """The model prompt for an instruction `text` about `num_audio` clips.

    `text` is returned as is when it already holds the processor's audio placeholder; otherwise it becomes a one-turn
    user message with `num_audio` audio parts before the text, rendered by the processor's chat template, or, without
    a template, each clip's audio marker (the backbone's `plain_prompt_audio`: Qwen2-Audio's
    `<|audio_bos|><|AUDIO|><|audio_eos|>`, the placeholder alone for the others) is put in front of it.

    Raises:
        ValueError: for a backbone whose processor takes audio only from a chat (Voxtral: mistral-common writes the
            placeholders and the processor refuses text that holds them); the message names the chat route.
    """
    backbone = backbone_for(processor) or Backbone()  # another processor: its placeholder in front of the text
    return backbone.build_prompt(processor, text, num_audio)


class AudioTextToTextPipeline(Pipeline):
    """Generates text from audio and a text prompt (or a chat), with the model's audio-token merge setting.

    Inputs (one sample, or a list of samples for a batch):

    - an audio source (file path, http(s) URL, waveform array/tensor at the processor's sampling rate, or
      `{"array": waveform, "sampling_rate": rate}`) with the prompt in `text` (a string, or one per sample);
    - a dict `{"audio": source or list of sources, "text": prompt}`;
    - a chat: a list of `{"role", "content"}` messages whose content parts include `{"type": "audio", "path" | "url"
      | "audio": ...}`, rendered with the processor's chat template.

    A plain prompt without the audio placeholder is wrapped in a one-turn chat when the processor has a chat template,
    otherwise the placeholder(s) are put in front of it. Batches are left-padded and run through one `generate()`.

    Call arguments: `text`, `batch_size`, `max_new_tokens`, `generate_kwargs` (never modified), `return_full_text`
    (default `False`: only the new text), `audio_token_merge` (a merge setting for this call only; the previous one
    is restored afterwards, also on errors), `continue_final_message`.

    Returns, per sample, a list with one dict per returned sequence: `generated_text`, `input_text` (the prompt or
    chat), `audio_tokens_before` and `audio_tokens_after` (the sample's audio tokens before merging and those the
    language model saw).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=256)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None or not hasattr(self.processor, "feature_extractor"):
            raise ValueError(
                f"The {TASK} pipeline needs the model's processor (feature extractor + tokenizer); pass `processor=`."
            )
        if getattr(self.model.config, "audio_token_id", None) is None:
            raise ValueError(
                f"{type(self.model).__name__} is not an audio-language model with audio placeholders; the {TASK} "
                "pipeline supports Qwen2-Audio and Audio Flamingo 3."
            )
        if self.tokenizer is None:
            self.tokenizer = self.processor.tokenizer

    # ------------------------------------------------------------------------------------------------- arguments
    def _sanitize_parameters(
        self,
        max_new_tokens: Optional[int] = None,
        generate_kwargs: Optional[dict] = None,
        return_full_text: Optional[bool] = None,
        continue_final_message: Optional[bool] = None,
        skip_special_tokens: Optional[bool] = None,
        **unused: Any,
    ):
        if unused:
            raise TypeError(f"Unexpected argument(s) for the {TASK} pipeline: {sorted(unused)}.")
        if generate_kwargs is not None and not isinstance(generate_kwargs, Mapping):
            raise TypeError(f"`generate_kwargs` must be a dict of generate() arguments, got {generate_kwargs!r}.")
        for name, value in (
            ("return_full_text", return_full_text),
            ("continue_final_message", continue_final_message),
            ("skip_special_tokens", skip_special_tokens),
        ):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"`{name}` must be True or False, got {value!r}.")
        generate = dict(generate_kwargs or {})  # a copy: the caller's dict is never modified
        if max_new_tokens is not None:
            _check_positive_int("max_new_tokens", max_new_tokens)
            if "max_new_tokens" in generate:
                raise ValueError("`max_new_tokens` was given twice: directly and in `generate_kwargs`; use one.")
            generate["max_new_tokens"] = max_new_tokens
        preprocess = {} if continue_final_message is None else {"continue_final_message": continue_final_message}
        postprocess = {}
        if return_full_text is not None:
            postprocess["return_full_text"] = return_full_text
        if skip_special_tokens is not None:
            postprocess["skip_special_tokens"] = skip_special_tokens
        return preprocess, {"generate_kwargs": generate}, postprocess

    def __call__(
        self,
        inputs: Any,
        text: Union[str, Sequence[str], None] = None,
        *,
        batch_size: Optional[int] = None,
        audio_token_merge: Any = _UNSET,
        **kwargs: Any,
    ) -> Union[list[dict[str, Any]], list[list[dict[str, Any]]]]:
        """Runs the pipeline; see the class docstring for inputs, arguments and outputs."""
        samples, single = self._normalise(inputs, text)
        batch_size = _check_positive_int("batch_size", batch_size if batch_size is not None else self._batch_size or 1)
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs)
        self._check_audio(samples)
        preprocess = {**self._preprocess_params, **preprocess}
        forward = {**self._forward_params, **forward}
        postprocess = {**self._postprocess_params, **postprocess}
        switch = (
            nullcontext()
            if audio_token_merge is _UNSET
            else _merge_setting(self.model, audio_token_merge, self.processor)
        )
        results: list[list[dict[str, Any]]] = []
        with switch:
            for start in range(0, len(samples), batch_size):
                batch = _Batch(samples[start : start + batch_size])
                results.extend(self.run_single(batch, preprocess, forward, postprocess))
        return results[0] if single else results

    def _check_audio(self, samples: list[_Sample]) -> None:
        """Every input's audio is checked (readable, and not longer than a merging processor takes) before any batch
        runs, so that a bad input late in a list fails the call before the model does any work."""
        rate = self.processor.feature_extractor.sampling_rate
        lengths = [check_audio(source, rate) for sample in samples for source in sample.audio]
        check_lengths = getattr(self.processor, "check_audio_lengths", None)
        if check_lengths is not None:
            check_lengths([0 if n is None else n for n in lengths], rate)

    def _normalise(self, inputs: Any, text: Union[str, Sequence[str], None]) -> tuple[list[_Sample], bool]:
        """Turns the accepted input forms into `_Sample`s; the flag says whether a single sample was given."""
        if _is_chat(inputs):
            items, single = [inputs], True
        elif isinstance(inputs, (list, tuple)):
            items, single = list(inputs), False
        else:
            items, single = [inputs], True
        if not items:
            raise ValueError("`inputs` is empty: pass audio, a dict with 'audio' and 'text', or a chat.")
        if text is None or isinstance(text, str):
            texts = [text] * len(items)
        else:
            if not isinstance(text, Sequence) or not all(isinstance(t, str) for t in text):
                raise TypeError(f"`text` must be a prompt (str) or a list of prompts, one per input, got {text!r}.")
            texts = list(text)
            if len(texts) != len(items):
                raise ValueError(f"Got {len(items)} inputs but {len(texts)} texts; pass one prompt or one per input.")
        samples = []
        for item, prompt in zip(items, texts):
            if _is_chat(item):
                if prompt is not None:
                    raise ValueError("`text` cannot be combined with chat inputs: put the prompt in the messages.")
                samples.append(_Sample(audio=_audio_parts(item), messages=list(item)))
            elif isinstance(item, dict) and "audio" in item and "role" not in item:
                audio = item["audio"]
                audio = list(audio) if isinstance(audio, (list, tuple)) else [audio]
                samples.append(_Sample(audio=audio, text=item.get("text", prompt)))
            else:
                samples.append(_Sample(audio=[item], text=prompt))
        return samples, single

    # ---------------------------------------------------------------------------------------------------- stages
    def _prompt(self, sample: _Sample, continue_final_message: Optional[bool]) -> str:
        processor = self.processor
        if sample.messages is not None:
            if getattr(processor, "chat_template", None) is None:
                raise ValueError(f"{type(processor).__name__} has no chat template; pass a plain prompt in `text`.")
            cont = continue_final_message
            if cont is None:
                cont = sample.messages[-1]["role"] == "assistant"
            return processor.apply_chat_template(
                sample.messages, tokenize=False, add_generation_prompt=not cont, continue_final_message=cont
            )
        return build_prompt(processor, DEFAULT_PROMPT if sample.text is None else sample.text, len(sample.audio))

    def _conversation(self, sample: _Sample, clips: list) -> list[dict]:
        """The chat of a sample with its loaded waveforms in the audio parts (for `chat_only` backbones): a chat's own
        messages, or one user turn with the clips where the text holds the audio placeholder (else first)."""
        arrays = iter(clips)
        if sample.messages is not None:
            turns = []
            for message in sample.messages:
                content = message["content"]
                if isinstance(content, (list, tuple)):
                    content = [
                        {"type": "audio", "audio": next(arrays)}
                        if isinstance(part, dict) and part.get("type") == "audio"
                        else part
                        for part in content
                    ]
                turns.append({**message, "content": content})
            return turns
        text = DEFAULT_PROMPT if sample.text is None else sample.text
        pieces = text.split(self.processor.audio_token)
        if len(pieces) == 1:
            pieces = [""] * len(clips) + [text]
        elif len(pieces) - 1 != len(clips):
            raise ValueError(
                f"The prompt holds {len(pieces) - 1} audio placeholder(s) for {len(clips)} clip(s): {text!r}."
            )
        content: list[dict] = []
        for index, piece in enumerate(pieces):
            if index:
                content.append({"type": "audio", "audio": next(arrays)})
            if piece.strip():
                content.append({"type": "text", "text": piece.strip()})
        return [{"role": "user", "content": content}]

    def preprocess(self, batch: _Batch, continue_final_message: Optional[bool] = None) -> dict[str, Any]:
        rate = self.processor.feature_extractor.sampling_rate
        backbone = backbone_for(self.processor)
        chat_only = backbone is not None and backbone.chat_only
        prompts, audio, clips_per_sample = [], [], []
        for sample in batch:
            clips = [load_audio(source, rate) for source in sample.audio]
            prompts.append(
                self._conversation(sample, clips) if chat_only else self._prompt(sample, continue_final_message)
            )
            audio.extend(clips)
            clips_per_sample.append(len(sample.audio))
        if chat_only:  # mistral-common writes the prompt (and its audio placeholders) from the chat
            inputs = backbone.encode_chats(self.processor, prompts, rate).to(dtype=self.dtype)
        else:
            # Padding is for the text only: a top-level `padding` also reaches the feature extractor, and the stock
            # Audio Flamingo 3 processor then pads the features to the batch's longest clip, which its encoder cannot
            # take.
            inputs = self.processor(
                text=prompts,
                audio=audio or None,
                sampling_rate=rate,
                text_kwargs={"padding": True, "padding_side": "left"},
                return_tensors="pt",
            ).to(dtype=self.dtype)
        units = units_per_clip(self.processor, [len(clip) for clip in audio])
        return {
            "model_inputs": dict(inputs),
            "samples": list(batch),
            "units_per_sample": [
                sum(units[c] for c in range(start, start + n))
                for start, n in zip(np.cumsum([0] + clips_per_sample[:-1]), clips_per_sample)
            ],
        }

    def _forward(self, batch: dict[str, Any], generate_kwargs: Optional[dict] = None) -> dict[str, Any]:
        inputs = batch["model_inputs"]
        if hasattr(self.model, "_unit_mask"):  # a merging model: its backbone's feature mask (or all frames)
            feature_mask = self.model._unit_mask(inputs)
        else:
            mask_name = "feature_attention_mask" if "feature_attention_mask" in inputs else "input_features_mask"
            feature_mask = inputs.get(mask_name)
        before = after = None
        if feature_mask is not None:
            counts = getattr(self.model, "audio_token_counts", None)
            if counts is not None:
                before, after = counts(feature_mask)
            else:  # an upstream class: nothing is merged
                before = after = self.model.model.audio_tower._get_feat_extract_output_lengths(feature_mask.sum(-1))[1]
        kwargs = prepare_pipeline_generate_kwargs(self, generate_kwargs or {})
        sequences = self.model.generate(**inputs, **kwargs)
        if not isinstance(sequences, torch.Tensor):
            sequences = sequences.sequences
        return {
            "sequences": sequences,
            "prompt_length": inputs["input_ids"].shape[1],
            "samples": batch["samples"],
            "units_per_sample": batch["units_per_sample"],
            "before": before,
            "after": after,
        }

    def postprocess(
        self, outputs: dict[str, Any], return_full_text: bool = False, skip_special_tokens: bool = True
    ) -> list[list[dict[str, Any]]]:
        samples = outputs["samples"]
        new_tokens = outputs["sequences"][:, outputs["prompt_length"] :]
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=skip_special_tokens)
        per_sample = len(texts) // len(samples)
        starts = np.cumsum([0] + outputs["units_per_sample"][:-1])
        results = []
        for i, (sample, start, units) in enumerate(zip(samples, starts, outputs["units_per_sample"])):
            before = after = 0
            if outputs["before"] is not None:
                before = int(outputs["before"][start : start + units].sum())
                after = int(outputs["after"][start : start + units].sum())
            candidates = []
            for generated in texts[i * per_sample : (i + 1) * per_sample]:
                if return_full_text:
                    generated = _full_text(sample, generated)
                candidates.append(
                    {
                        "generated_text": generated,
                        "input_text": sample.shown,
                        "audio_tokens_before": before,
                        "audio_tokens_after": after,
                    }
                )
            results.append(candidates)
        return results


def _full_text(sample: _Sample, generated: str) -> Union[str, list]:
    if sample.messages is None:
        return (DEFAULT_PROMPT if sample.text is None else sample.text) + generated
    return list(sample.messages) + [{"role": "assistant", "content": [{"type": "text", "text": generated}]}]


def register_pipeline() -> bool:
    """Registers the task with transformers unless it already has one of this name; returns whether it did."""
    from transformers import AutoModelForSeq2SeqLM
    from transformers.pipelines import PIPELINE_REGISTRY

    if TASK in PIPELINE_REGISTRY.get_supported_tasks():
        if PIPELINE_REGISTRY.supported_tasks[TASK]["impl"] is not AudioTextToTextPipeline:
            logger.info(f"transformers already has a {TASK!r} pipeline; hf_ltbm leaves it in place.")
        return False
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=AudioTextToTextPipeline, pt_model=AutoModelForSeq2SeqLM)
    return True


register_pipeline()  # the task exists wherever its class does
