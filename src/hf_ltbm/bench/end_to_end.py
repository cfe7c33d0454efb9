"""End-to-end benchmark: what merging saves in a Qwen2-Audio-architecture model (random weights) on a 30 s clip.

Per keep ratio (1.0 = merging off; others: the given method), all measured in one process, interleaved across
ratios after a warm-up round, medians over repeats:

- `encoder_ms`: audio encoder + projector (`get_audio_features` with merging off);
- `merge_ms`: the merge of the encoder output alone (`AudioTokenMergeConfig.merge`);
- `prefill_ms`: the language model's forward over the prompt (text + M audio embeddings), KV cache on;
- `ttft_ms`: `generate()` up to its first token (encoder + merge + prefill), `decode_tok_s`: the tokens per second
  after it;
- `peak_mb`: extra tensor memory of one `generate()` (separate, untimed run), `kv_mb`: the KV cache after prefill,
  checked against the exact size for text + M tokens.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import torch

from ..compat import output_cache
from ..config import AudioTokenMergeConfig
from ..context import audio_token_merge
from ..timing import PrefillTimer
from .memory import PeakMemory

__all__ = ["SCALES", "build_benchmark_model", "run_end_to_end"]

SCALES: dict[str, dict[str, dict[str, int]]] = {
    # Qwen2-Audio-7B's shapes: Whisper-large-v3 encoder, Qwen-7B language model.
    "7b": {
        "audio": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120),
        "text": dict(
            hidden_size=4096,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            intermediate_size=11008,
            vocab_size=156032,
        ),
    },
    # CPU-friendly default: the encoder costs about a fifth of the prefill of a full 30 s prompt, as at 7B scale.
    "cpu": {
        "audio": dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536),
        "text": dict(
            hidden_size=768,
            num_hidden_layers=6,
            num_attention_heads=12,
            num_key_value_heads=12,
            intermediate_size=2048,
            vocab_size=32000,
        ),
    },
    # Serving on CPU: a small audio encoder next to a larger language model, so that the language model dominates the
    # prefill of a 30 s prompt in vLLM (whose CPU kernels serve the language model faster than the encoder), as in
    # Qwen2-Audio-7B, where the language model does about 85% of the prefill's work.
    "cpu-lm": {
        "audio": dict(d_model=256, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=1024),
        "text": dict(
            hidden_size=1024,
            num_hidden_layers=8,
            num_attention_heads=16,
            num_key_value_heads=4,
            intermediate_size=2816,
            vocab_size=32000,
        ),
    },
    # For smoke tests.
    "tiny": {
        "audio": dict(d_model=64, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=128),
        "text": dict(
            hidden_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=128,
            vocab_size=512,
        ),
    },
}


def build_benchmark_model(scale: str, device: torch.device, dtype: torch.dtype, tokenizer: Any = None) -> Any:
    """A random-weight `Qwen2AudioLTBMForConditionalGeneration` with the shapes of `SCALES[scale]` (128 mel bins,
    30 s windows), on `device` in `dtype`, eval mode. With a `tokenizer` (one with `<|AUDIO|>`), the vocabulary and
    special token ids are the tokenizer's, so that the model can be served with it."""
    from transformers import Qwen2AudioConfig

    from ..backbones import Qwen2AudioLTBMForConditionalGeneration

    if scale not in SCALES:
        raise ValueError(f"`scale` must be one of {sorted(SCALES)}, got {scale!r}.")
    shapes = SCALES[scale]
    text = dict(model_type="qwen2", max_position_embeddings=32768, tie_word_embeddings=False, **shapes["text"])
    text.update(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    audio_token_id = shapes["text"]["vocab_size"] - 1
    if tokenizer is not None:
        text.update(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        audio_token_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    config = Qwen2AudioConfig(
        audio_config=dict(
            model_type="qwen2_audio_encoder", num_mel_bins=128, max_source_positions=1500, **shapes["audio"]
        ),
        text_config=text,
        audio_token_id=audio_token_id,
    )
    with torch.device(device):
        torch.manual_seed(0)
        model = Qwen2AudioLTBMForConditionalGeneration(config).to(dtype)
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    _sync(device)
    return time.perf_counter() - start, out


def _kv_bytes(cache: Any) -> int:
    total = 0
    for layer in cache.layers:
        total += layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
    return total


@torch.no_grad()
def run_end_to_end(
    scale: str = "cpu",
    keep_ratios: Sequence[float] = (1.0, 0.75, 0.5, 0.25, 0.1),
    method: str = "ltbm",
    seconds: float = 30.0,
    text_tokens: int = 24,
    new_tokens: int = 16,
    repeats: int = 3,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    memory: bool = True,
    size_aware: bool = False,
    progress: Optional[Callable[[str], None]] = None,
) -> list[dict[str, Any]]:
    """One row per keep ratio (and, with `size_aware`, one more per merged ratio with size-aware attention, to
    measure its cost); see the module docstring for the columns."""
    from transformers import WhisperFeatureExtractor

    device = torch.device(device)
    model = build_benchmark_model(scale, device, dtype)
    cfg = model.config
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
    extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=30)
    feats = extractor([audio], sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
    features = feats["input_features"].to(device, dtype)
    mask = feats["attention_mask"].to(device)
    text = torch.randint(3, cfg.text_config.vocab_size - 1, (text_tokens,), generator=torch.Generator().manual_seed(0))
    settings = [None if k == 1.0 else AudioTokenMergeConfig(method=method, keep_ratio=k) for k in keep_ratios]
    if size_aware:
        settings += [dataclasses.replace(s, size_aware_attention=True) for s in settings if s is not None]
        keep_ratios = [*keep_ratios, *(k for k in keep_ratios if k != 1.0)]

    def inputs_for(setting: Optional[AudioTokenMergeConfig]) -> dict[str, torch.Tensor]:
        with audio_token_merge(model, setting):
            _, m = model.audio_token_counts(mask)
        ids = torch.cat([text[:4], torch.full((int(m.sum()),), cfg.audio_token_id), text[4:]])[None].to(device)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "input_features": features,
            "feature_attention_mask": mask,
        }

    prepared = [inputs_for(s) for s in settings]
    # Size-aware rows: the per-key bias the language model gets from the merge (for the direct prefill timing).
    biases = []
    for setting, inputs in zip(settings, prepared):
        bias = None
        if setting is not None and setting.size_aware_attention:
            with audio_token_merge(model, setting):
                bias = model.model(**inputs, use_cache=False).key_log_sizes
        biases.append({} if bias is None else {"key_log_sizes": bias})
    times: list[dict[str, list[float]]] = [{} for _ in settings]
    kv: list[int] = [0] * len(settings)
    hidden = model.model._token_states(model.model._run_encoder(features, mask))  # what the merge timing runs on
    lengths = model.model._audio_unit_lengths(mask)
    for round_ in range(repeats + 1):
        for i, (setting, inputs, bias) in enumerate(zip(settings, prepared, biases)):
            record: dict[str, float] = {}
            with audio_token_merge(model, None):
                record["encoder"], _ = _timed(device, model.get_audio_features, features, mask)
            record["merge"] = _timed(device, setting.merge, hidden, lengths)[0] if setting else 0.0
            with audio_token_merge(model, setting):
                embeds = model.model.get_input_embeddings()(inputs["input_ids"])
                record["prefill"], out = _timed(
                    device,
                    model.model.language_model,
                    inputs_embeds=embeds,
                    attention_mask=inputs["attention_mask"],
                    use_cache=True,
                    **bias,
                )
                kv[i] = _kv_bytes(output_cache(out))
                del out
                with PrefillTimer(model) as timer:
                    total, _ = _timed(
                        device,
                        model.generate,
                        **inputs,
                        max_new_tokens=new_tokens,
                        min_new_tokens=new_tokens,
                        do_sample=False,
                        logits_processor=[timer],
                    )
                record["ttft"] = timer.seconds
                record["decode"] = total - timer.seconds
            if round_:
                for key, value in record.items():
                    times[i].setdefault(key, []).append(value)
        if progress:
            progress(f"end to end: round {round_}/{repeats} done")

    head_dim = cfg.text_config.hidden_size // cfg.text_config.num_attention_heads
    per_token = 2 * cfg.text_config.num_hidden_layers * cfg.text_config.num_key_value_heads * head_dim
    per_token *= torch.finfo(dtype).bits // 8
    rows = []
    for k, setting, inputs, t, kv_bytes in zip(keep_ratios, settings, prepared, times, kv):
        med = {key: statistics.median(v) for key, v in t.items()}
        peak = float("nan")
        if memory:
            with audio_token_merge(model, setting), PeakMemory(device) as mem:
                model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            peak = mem.peak_bytes / 2**20
        prompt = int(inputs["input_ids"].shape[1])
        rows.append(
            {
                "scale": scale,
                "setting": "none" if setting is None else str(setting),
                "keep_ratio": k,
                "audio_tokens": prompt - text_tokens,
                "prompt_tokens": prompt,
                "encoder_ms": med["encoder"] * 1e3,
                "merge_ms": med["merge"] * 1e3,
                "prefill_ms": med["prefill"] * 1e3,
                "ttft_ms": med["ttft"] * 1e3,
                "decode_tok_s": (new_tokens - 1) / med["decode"],
                "peak_mb": peak,
                "kv_mb": kv_bytes / 2**20,
                "kv_exact": kv_bytes == prompt * per_token,
            }
        )
    base = rows[0]
    for row in rows:
        row["prefill_speedup"] = base["prefill_ms"] / row["prefill_ms"]
        row["ideal_speedup"] = base["prompt_tokens"] / row["prompt_tokens"]
        row["speedup_vs_ideal"] = row["prefill_speedup"] / row["ideal_speedup"]
        row["ttft_speedup"] = base["ttft_ms"] / row["ttft_ms"]
        row["merge_overhead"] = row["merge_ms"] / row["prefill_ms"]
        row["merge_vs_unmerged_prefill"] = row["merge_ms"] / base["prefill_ms"]
    return rows
