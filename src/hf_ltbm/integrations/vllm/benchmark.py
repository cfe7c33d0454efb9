"""Serving benchmark: what merging saves under vLLM's continuous batching (`hf-ltbm bench vllm`).

One in-process engine serves every setting: per round, `requests` concurrent requests, each with its own 30 s clip
(fresh clips every round, so no cache serves one round from another; prefix caching off), the same prompt and a fixed
number of output tokens (`ignore_eos`); merging off (keep 1.0) and each keep ratio are interleaved after a warm-up
round, and each setting reports the median over `repeats` rounds of requests per second, output tokens per second
and the median time to first token, with its ratio to merging off.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

__all__ = ["build_serving_checkpoint", "run_serving_benchmark", "serving_markdown"]


def build_serving_checkpoint(folder: Path, scale: str, dtype: torch.dtype = torch.float32) -> Path:
    """Saves a random-weight Qwen2-Audio with the shapes of `hf_ltbm.bench.end_to_end.SCALES[scale]` (its language
    model dominates the prefill of a 30 s prompt) and a word-level processor with a chat template to `folder`."""
    from ...bench.end_to_end import build_benchmark_model
    from ...tiny import build_tiny_processor

    processor = build_tiny_processor("tiny-random-qwen2-audio")
    model = build_benchmark_model(scale, torch.device("cpu"), dtype, tokenizer=processor.tokenizer)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = 0.2 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
    return (tone + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def run_serving_benchmark(
    model: str,
    keep_ratios: Sequence[float] = (1.0, 0.5, 0.25),
    method: str = "ltbm",
    requests: int = 16,
    clip_seconds: float = 30.0,
    new_tokens: int = 32,
    repeats: int = 3,
    engine_options: Optional[dict[str, Any]] = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> list[dict[str, Any]]:
    """Runs the benchmark (see the module docstring) on the checkpoint `model`; returns one row per keep ratio."""
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    from ...pipeline import build_prompt

    if not keep_ratios or keep_ratios[0] != 1.0:
        raise ValueError(f"`keep_ratios` must start with 1.0 (merging off, the baseline), got {list(keep_ratios)}.")
    options = dict(max_model_len=4096, enable_prefix_caching=False, disable_log_stats=False, seed=0)
    options.update(engine_options or {})
    llm = LLM(model=model, limit_mm_per_prompt={"audio": 1}, **options)
    prompt = build_prompt(AutoProcessor.from_pretrained(model), "Describe the audio.")
    sampling = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)

    def setting(ratio: float) -> Any:
        return None if ratio == 1.0 else {"method": method, "keep_ratio": ratio}

    def one_round(ratio: float, seed: int, count: int) -> dict[str, float]:
        batch = [
            {
                "prompt": prompt,
                "multi_modal_data": {"audio": (_clip(clip_seconds, seed * 1000 + i), 16000)},
                "mm_processor_kwargs": {"audio_token_merge": setting(ratio)},
            }
            for i in range(count)
        ]
        start = time.perf_counter()
        outputs = llm.generate(batch, sampling, use_tqdm=False)
        wall = time.perf_counter() - start
        ttfts = [o.metrics.first_token_latency for o in outputs if getattr(o, "metrics", None) is not None]
        return {
            "wall_s": wall,
            "requests_per_s": count / wall,
            "output_tokens_per_s": sum(len(o.outputs[0].token_ids) for o in outputs) / wall,
            "ttft_ms": 1000 * statistics.median(ttfts) if ttfts else float("nan"),
            "ttft_mean_ms": 1000 * statistics.mean(ttfts) if ttfts else float("nan"),
            "prompt_tokens": statistics.mean(len(o.prompt_token_ids) for o in outputs),
        }

    for ratio in keep_ratios:  # warm-up
        one_round(ratio, seed=10_000 + int(ratio * 100), count=min(2, requests))
    rounds: dict[float, list[dict[str, float]]] = {ratio: [] for ratio in keep_ratios}
    for repeat in range(repeats):
        order = list(keep_ratios[repeat % len(keep_ratios) :]) + list(keep_ratios[: repeat % len(keep_ratios)])
        for ratio in order:
            rounds[ratio].append(one_round(ratio, seed=repeat * 100 + int(ratio * 100), count=requests))
            progress(f"round {repeat + 1}/{repeats}, keep {ratio}: {rounds[ratio][-1]['requests_per_s']:.2f} req/s")
    rows = []
    for ratio in keep_ratios:
        row = {"method": "none" if ratio == 1.0 else method, "keep_ratio": ratio, "requests": requests}
        for key in ("prompt_tokens", "requests_per_s", "output_tokens_per_s", "ttft_ms", "ttft_mean_ms", "wall_s"):
            row[key] = statistics.median(r[key] for r in rounds[ratio])
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["throughput_x"] = row["requests_per_s"] / base["requests_per_s"]
        row["ttft_x"] = base["ttft_ms"] / row["ttft_ms"] if row["ttft_ms"] == row["ttft_ms"] else float("nan")
    return rows


def serving_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a Markdown table (ratios against merging off, > 1 is faster; the TTFT speed-up is of the
    median). All requests of a round arrive at once, so the TTFT includes the wait for the engine's earlier steps."""
    from ...tables import markdown_table

    header = [
        "setting",
        "prompt tokens",
        "req/s",
        "output tok/s",
        "TTFT median ms",
        "TTFT mean ms",
        "req/s vs off",
        "TTFT speed-up",
    ]
    body = [
        [
            "off" if row["keep_ratio"] == 1.0 else f"{row['method']} keep {row['keep_ratio']:g}",
            f"{row['prompt_tokens']:.0f}",
            f"{row['requests_per_s']:.2f}",
            f"{row['output_tokens_per_s']:.1f}",
            f"{row['ttft_ms']:.0f}",
            f"{row['ttft_mean_ms']:.0f}",
            f"{row['throughput_x']:.2f}x",
            f"{row['ttft_x']:.2f}x",
        ]
        for row in rows
    ]
    return markdown_table(header, body)
