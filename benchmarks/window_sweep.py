"""The sweep behind LTBM's default window.

The paper does not publish its window. This script measures, for windows 1..31 and Global Merge, how faithfully the
merged tokens represent their frames (mean cosine between every frame and its merged token) and how far merges reach
in time (mean / max span of a merged token, share of tokens that are not one contiguous run), on two kinds of audio:

- speech synthesised with espeak-ng (several voices and rates; skipped with a note if espeak-ng is missing),
- synthetic sound scenes (tones, chirps, noise bursts, click trains and silences with random durations).

Features are 128-bin Whisper log-mel frames averaged over 4 frames to the audio encoder's 25 Hz token rate and
centred per clip: a stand-in for encoder features, since no pretrained encoder can be downloaded where this runs.
Usage: python benchmarks/window_sweep.py [--clips 8] [--keep-ratios 0.5 0.25 0.1] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import wave

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

import hf_ltbm
from hf_ltbm.merging.diagnostics import merge_stats

RATE = 16000
SENTENCES = [
    "The quick brown fox jumps over the lazy dog while the rain keeps falling on the old tin roof.",
    "Please remember to close the window before you leave, the forecast says a storm is coming tonight.",
    "A train whistles in the distance as the station master checks his watch and waves the flag.",
    "Seven hundred and fifty tokens for every thirty seconds of audio is a lot of work for a language model.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "After the concert the crowd slowly walked home, humming the melody they had just heard.",
]
VOICES = [("en-us", 150), ("en-gb", 130), ("en-us+f3", 175), ("en+m3", 160)]


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return audio
    t = torch.from_numpy(audio)[None, None]
    out = torch.nn.functional.interpolate(t, size=int(len(audio) * RATE / rate), mode="linear", align_corners=False)
    return out[0, 0].numpy()


def speech_clips(count: int) -> list[np.ndarray]:
    if shutil.which("espeak-ng") is None:
        print("espeak-ng not found: speech clips skipped (apt-get install espeak-ng)")
        return []
    clips = []
    for k in range(count):
        voice, speed = VOICES[k % len(VOICES)]
        text = " ".join(SENTENCES[(k + i) % len(SENTENCES)] for i in range(3))
        raw = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True
        ).stdout
        with wave.open(io.BytesIO(raw)) as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
            clips.append(_resample(audio, w.getframerate())[: 30 * RATE])
    return clips


def sound_scene(seed: int, seconds: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * RATE), dtype=np.float32)
    t0 = 0
    while t0 < len(out):
        dur = int(rng.uniform(0.1, 2.5) * RATE)
        t = np.arange(min(dur, len(out) - t0)) / RATE
        kind = rng.integers(5)
        if kind == 0:  # tone with vibrato
            f = rng.uniform(200, 3000)
            sig = np.sin(2 * np.pi * f * t + 3 * np.sin(2 * np.pi * rng.uniform(2, 8) * t))
        elif kind == 1:  # chirp
            f0, f1 = rng.uniform(100, 4000, 2)
            sig = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(t[-1], 1e-3))))
        elif kind == 2:  # coloured noise burst
            sig = np.convolve(rng.standard_normal(len(t)), np.ones(int(rng.integers(1, 30))), "same")
            sig /= np.abs(sig).max() + 1e-9
        elif kind == 3:  # click train (footsteps, knocks)
            sig = np.zeros(len(t))
            period = int(rng.uniform(0.08, 0.6) * RATE)
            for s in range(0, len(t), period):
                sig[s : s + 200] = rng.standard_normal(min(200, len(t) - s)) * np.exp(
                    -np.arange(min(200, len(t) - s)) / 40
                )
        else:  # silence
            sig = np.zeros(len(t))
        out[t0 : t0 + len(t)] += rng.uniform(0.1, 0.8) * sig.astype(np.float32)
        t0 += len(t)
    return out + 0.003 * rng.standard_normal(len(out)).astype(np.float32)


def features(audio: np.ndarray, extractor: WhisperFeatureExtractor) -> torch.Tensor:
    mel = extractor(audio, sampling_rate=RATE, return_tensors="pt").input_features[0]  # [128, 3000]
    frames = mel[:, : len(audio) // extractor.hop_length].T
    tokens = frames[: len(frames) // 4 * 4].reshape(-1, 4, frames.shape[1]).mean(1)  # 25 Hz
    return tokens - tokens.mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8, help="clips per kind of audio")
    parser.add_argument("--keep-ratios", type=float, nargs="+", default=[0.5, 0.25, 0.1])
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 3, 5, 7, 15, 31])
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    args = parser.parse_args()

    extractor = WhisperFeatureExtractor(feature_size=128)
    kinds = {"speech": speech_clips(args.clips), "sound": [sound_scene(s) for s in range(args.clips)]}
    settings = [(f"ltbm w={w}", {"window": w}) for w in args.windows] + [("global", {"method": "global"})]
    rows = []
    for kind, clips in kinds.items():
        feats = [features(a, extractor) for a in clips]
        for ratio in args.keep_ratios:
            for name, kwargs in settings:
                stats = []
                for f in feats:
                    out = hf_ltbm.merge_tokens(f[None], keep_ratio=ratio, **kwargs)
                    stats.append(merge_stats(f, out.tokens[0, : int(out.lengths[0])], out.assignment[0]))
                row = {"audio": kind, "keep_ratio": ratio, "setting": name}
                for key in stats[0]:
                    row[key] = statistics.mean(s[key] for s in stats)
                rows.append(row)
    print("| audio | keep | setting | 1 - cos (x1000) | mean span s | max span s | non-contiguous % |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['audio']} | {r['keep_ratio']} | {r['setting']} | {1000 * (1 - r['cosine']):.2f} | "
            f"{r['mean_span'] / 25:.2f} | {r['max_span'] / 25:.2f} | {100 * r['non_contiguous']:.1f} |"
        )
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
