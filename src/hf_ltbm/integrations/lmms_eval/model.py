"""The lmms-eval models: hf-ltbm's merging classes behind lmms-eval's chat-style model interface.

Each request's `doc_to_messages` chat (audio parts and text) goes through hf-ltbm's "audio-text-to-text" pipeline,
in batches of `batch_size` requests that share generation settings, so lmms-eval's predictions are exactly what
`generate()` gives on the same chats with the same setting.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.protocol import ChatMessages
from tqdm.auto import tqdm

from ...audio import AUDIO_EXTENSIONS
from ...backbones import BACKBONES
from ...config import AudioTokenMergeConfig

__all__ = ["HFLTBMAudioModel", "audio_chat", "merge_setting"]


#: `--model_args` names of the merge setting -> `AudioTokenMergeConfig` fields (the rest keep their names).
_SETTING_ARGS = {"size_aware": "size_aware_attention"}
_SETTING_FIELDS = (
    "keep_ratio",
    "num_tokens",
    "window",
    "seed",
    "space",
    "key_source",
    "size_aware",
    "preserve_norm",
    "options",
)


def merge_setting(method: Optional[str] = None, **fields: Any) -> Optional[AudioTokenMergeConfig]:
    """The setting `--model_args` describe: `method` (`None` or `"none"`: merging off) and the fields of
    `_SETTING_FIELDS` (`options` may be JSON). A field without a method, an unknown argument and invalid values
    (the config's own errors) raise."""
    unknown = sorted(set(fields) - set(_SETTING_FIELDS))
    if unknown:
        raise TypeError(
            f"Unknown --model_args {unknown}; hf-ltbm's models take pretrained, device, dtype, batch_size, "
            f"max_new_tokens, method and {', '.join(_SETTING_FIELDS)}."
        )
    given = {_SETTING_ARGS.get(key, key): value for key, value in fields.items() if value is not None}
    if isinstance(given.get("options"), str):
        given["options"] = json.loads(given["options"])
    if method in (None, "none"):
        if given:
            raise ValueError(f"--model_args {sorted(fields)} set a merge setting but `method` is {method!r}.")
        return None
    return AudioTokenMergeConfig(method=method, **given)


def _is_audio(source: Any) -> bool:
    if isinstance(source, dict):
        return any(key in source for key in ("array", "sampling_rate", "bytes")) or _is_audio(source.get("path"))
    return isinstance(source, str) and source.lower().endswith(AUDIO_EXTENSIONS)


def audio_chat(messages: Any) -> list[dict[str, Any]]:
    """A task's `doc_to_messages` chat as the pipeline's chat: text parts, and audio parts `{"type": "audio",
    "audio": source}`. lmms-eval marks a decoded audio dict (`{"array", "sampling_rate"}`) as a video part when it
    builds the chat itself; such parts are audio here. An image or a real video is refused."""
    chat = ChatMessages(messages=messages) if not isinstance(messages, ChatMessages) else messages
    converted = []
    for message in chat.messages:
        parts = []
        for content in message.content:
            if content.type == "text":
                parts.append({"type": "text", "text": content.text})
            elif content.type == "audio" or (content.type == "video" and _is_audio(content.url)):
                parts.append({"type": "audio", "audio": content.url})
            else:
                raise ValueError(
                    f"hf-ltbm's audio-language models take audio and text; this chat has a {content.type} part."
                )
        converted.append({"role": message.role, "content": parts})
    return converted


class HFLTBMAudioModel(lmms):
    """A chat-style lmms-eval model running an hf-ltbm merging model (`--model_args` below, all optional).

    Args:
        pretrained: checkpoint (hub id or folder) of the backbone.
        method, keep_ratio, num_tokens, window, seed, space, key_source, size_aware, preserve_norm, options: the merge
            setting
            (`AudioTokenMergeConfig` fields; `options` as JSON); no `method` (or `none`): merging off.
        device: `auto` (CUDA if available), `cpu`, `cuda:0`, ...; dtype: `auto`, `float32`, `bfloat16`, `float16`.
        batch_size: requests per `generate()` call (left-padded).
        max_new_tokens: the default when a task's generation settings name none.
    """

    is_simple = False
    default_pretrained = ""

    def __init__(
        self,
        pretrained: Optional[str] = None,
        method: Optional[str] = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: Union[int, str] = 1,
        max_new_tokens: int = 256,
        **setting_fields: Any,
    ) -> None:
        super().__init__()
        from transformers import pipeline

        from ...loading import load_model, load_processor, resolve_device, resolve_dtype
        from ...pipeline import TASK

        setting = merge_setting(method, **setting_fields)
        self.setting = setting
        self._device = resolve_device(device)
        checkpoint = pretrained or self.default_pretrained
        processor = load_processor(checkpoint, setting)
        model = load_model(checkpoint, setting, self._device, resolve_dtype(dtype, self._device))
        self.pipe = pipeline(TASK, model=model, processor=processor)
        self._batch_size = int(batch_size)
        if self._batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size!r}.")
        self.max_new_tokens = int(max_new_tokens)
        self._rank, self._world_size = 0, 1

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def _generation(self, gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """`generate()` arguments and stop strings from a task's generation settings (greedy unless it samples)."""
        gen_kwargs = dict(gen_kwargs)
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature") or 0)
        generation = {"max_new_tokens": int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens)}
        generation["num_beams"] = int(gen_kwargs.get("num_beams") or 1)
        if temperature > 0 or gen_kwargs.get("do_sample"):
            generation.update(do_sample=True, temperature=temperature or 1.0)
            if gen_kwargs.get("top_p") is not None:
                generation["top_p"] = float(gen_kwargs["top_p"])
        else:
            generation["do_sample"] = False
        return generation, until

    def generate_until(self, requests: Sequence[Instance]) -> list[str]:
        """Answers chat requests (`doc_to_messages`) in batches of requests with the same generation settings, in
        request order within each group; returns the answers in the order of `requests`."""
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[2], sort_keys=True, default=str), []).append(index)
        results: list[Optional[str]] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="hf-ltbm responding")
        for members in groups.values():
            generation, until = self._generation(requests[members[0]].args[2])
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                chats = []
                for index in batch:
                    _, doc_to_messages, _, doc_id, task, split = requests[index].args
                    chats.append(audio_chat(doc_to_messages(self.task_dict[task][split][doc_id])))
                outputs = self.pipe(chats, batch_size=len(chats), generate_kwargs=generation)
                for index, output in zip(batch, outputs):
                    text = output[0]["generated_text"]
                    for stop in until:
                        if stop:
                            text = text.split(stop)[0]
                    results[index] = text
                    self.cache_hook.add_partial(
                        "generate_until", (requests[index].args[0], requests[index].args[2]), text
                    )
                progress.update(len(batch))
        progress.close()
        return [text or "" for text in results]

    def loglikelihood(self, requests: Sequence[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "hf-ltbm's lmms-eval models generate (generate_until); log-likelihood tasks are not supported."
        )

    def generate_until_multi_round(self, requests: Sequence[Instance]) -> list[str]:
        raise NotImplementedError("hf-ltbm's lmms-eval models answer single-round chats (generate_until).")


@functools.cache
def _backbone_model(name: str) -> type:
    for backbone in BACKBONES.values():
        if name == f"{backbone.class_prefix}LTBM":
            return type(
                name,
                (HFLTBMAudioModel,),
                {
                    "__doc__": f"`--model {backbone.lmms_eval_id}`: {backbone.display_name} with merged audio tokens "
                    f"(default {backbone.default_checkpoint}).",
                    "__module__": __name__,
                    "default_pretrained": backbone.default_checkpoint,
                },
            )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __getattr__(name: str) -> type:  # one model class per backbone (`Qwen2AudioLTBM`), made from its declaration
    return _backbone_model(name)
