"""Checks that the patch changes nothing while `audio_token_merge` is unset.

Run it twice, once against the pristine transformers source and once against the patched one (the import path
decides which `transformers` is used; `apply_and_test.py` sets `PYTHONPATH` accordingly):

    PYTHONPATH=pristine/src python check_unchanged.py save reference.pt
    PYTHONPATH=patched/src  python check_unchanged.py compare reference.pt

`save` builds tiny random Qwen2-Audio and Audio Flamingo 3 models and their processors (no download), runs them on
fixed inputs and stores the weights, the processor outputs, the logits (expanded prompts and, for Qwen2-Audio, the
legacy one-placeholder prompts), the audio features and greedy generations. `compare` loads the same weights into
the patched classes and requires every tensor to be bitwise equal and every config value to match, apart from the
new `audio_token_merge` key (which must be `None`).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch


def _tokenizer(special_tokens: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "describe the sound what is this audio please".split()
    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "</s>", *special_tokens, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        additional_special_tokens=special_tokens,
        padding_side="left",
    )


def _audio(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1


def _text_config(tokenizer) -> dict:
    return {
        "model_type": "qwen2",
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _config_dict(config) -> str:
    values = config.to_dict()
    values.pop("transformers_version", None)
    merge = values.pop("audio_token_merge", None)
    if merge is not None:
        raise AssertionError(f"audio_token_merge must default to None, got {merge!r}")
    return json.dumps(values, sort_keys=True, default=repr)


def _run(name: str, processor, model, prompts: list[str], audios: list[np.ndarray], feature_mask_name: str) -> dict:
    results = {}
    inputs = processor(text=prompts, audio=audios, return_tensors="pt", padding=True)
    for key in ("input_ids", "attention_mask", "input_features", feature_mask_name):
        results[f"{name}.processor.{key}"] = inputs[key]
    with torch.no_grad():
        results[f"{name}.logits"] = model(**inputs).logits
        results[f"{name}.generate"] = model.generate(
            **inputs, max_new_tokens=5, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id
        )
        if hasattr(model, "get_audio_features"):
            audio = model.get_audio_features(inputs["input_features"], inputs[feature_mask_name])
            results[f"{name}.audio_features"] = audio.pooler_output
    return results


def build_and_run(weights: dict | None) -> tuple[dict, dict, dict]:
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    results, configs, state = {}, {}, {}
    torch.manual_seed(0)

    # Qwen2-Audio: expanded prompts (one placeholder per audio token) and legacy prompts (one per clip)
    tokenizer = _tokenizer(["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"])
    processor = Qwen2AudioProcessor(WhisperFeatureExtractor(), tokenizer, chat_template="{{ messages }}")
    config = Qwen2AudioConfig(
        text_config=_text_config(tokenizer),
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "d_model": 16,
            "encoder_attention_heads": 4,
            "encoder_ffn_dim": 16,
            "encoder_layers": 2,
            "num_mel_bins": 80,
            "max_source_positions": 1500,
        },
        audio_token_index=processor.audio_token_id,
    )
    model = Qwen2AudioForConditionalGeneration(config).eval()
    if weights is not None:
        model.load_state_dict(weights["qwen2_audio"])
    state["qwen2_audio"] = model.state_dict()
    configs["qwen2_audio"] = _config_dict(model.config)
    prompt = "<|audio_bos|><|AUDIO|><|audio_eos|> describe the sound"
    audios = [_audio(7.0, 0), _audio(2.5, 1)]
    results.update(
        _run("qwen2_audio", processor, model, [prompt, "what is this " + prompt], audios, "feature_attention_mask")
    )
    legacy = processor.feature_extractor(
        audios, sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt"
    )
    ids = tokenizer([prompt, prompt], return_tensors="pt")
    with torch.no_grad():
        results["qwen2_audio.legacy_logits"] = model(
            input_ids=ids["input_ids"],
            attention_mask=ids["attention_mask"],
            input_features=legacy["input_features"],
            feature_attention_mask=legacy["attention_mask"],
        ).logits

    # Audio Flamingo 3: a 40 s clip (two 30 s windows) and a short one
    tokenizer = _tokenizer(["<sound>"])
    processor = AudioFlamingo3Processor(WhisperFeatureExtractor(), tokenizer, chat_template="{{ messages }}")
    config = AudioFlamingo3Config(
        text_config=_text_config(tokenizer),
        audio_config={
            "model_type": "audioflamingo3_encoder",
            "hidden_size": 16,
            "num_attention_heads": 4,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_mel_bins": 80,
            "max_source_positions": 1500,
        },
        audio_token_id=processor.audio_token_id,
    )
    model = AudioFlamingo3ForConditionalGeneration(config).eval()
    if weights is not None:
        model.load_state_dict(weights["audioflamingo3"])
    state["audioflamingo3"] = model.state_dict()
    configs["audioflamingo3"] = _config_dict(model.config)
    prompt = "<sound> describe the sound"
    results.update(
        _run(
            "audioflamingo3",
            processor,
            model,
            [prompt, "what is this " + prompt],
            [_audio(40.0, 2), _audio(3.0, 3)],
            "input_features_mask",
        )
    )
    return results, configs, state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("save", "compare"))
    parser.add_argument("reference", help="file written by `save` and read by `compare`")
    args = parser.parse_args()

    import transformers

    print(f"transformers {transformers.__version__} from {transformers.__file__}")
    if args.mode == "save":
        results, configs, state = build_and_run(None)
        torch.save({"results": results, "configs": configs, "weights": state}, args.reference)
        print(f"saved {len(results)} reference outputs to {args.reference}")
        return 0

    reference = torch.load(args.reference, weights_only=True)
    results, configs, _ = build_and_run(reference["weights"])
    problems = []
    for key, expected in reference["results"].items():
        got = results.get(key)
        if got is None or got.shape != expected.shape or not torch.equal(got, expected):
            problems.append(f"{key}: differs from the unpatched output")
    for key, expected in reference["configs"].items():
        if configs[key] != expected:
            problems.append(f"{key} config: differs from the unpatched config")
    for problem in problems:
        print(f"FAIL {problem}")
    print(
        f"compared {len(reference['results'])} outputs and {len(reference['configs'])} configs: "
        + ("all bitwise equal" if not problems else f"{len(problems)} differ")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
