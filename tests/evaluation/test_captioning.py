"""Captioning metrics against values computed by hand. pycocoevalcap runs Java; CI machines have Java 17."""

import math
import shutil

import pytest

from hf_ltbm.evaluation import captioning
from hf_ltbm.evaluation.captioning import MetricUnavailableError, caption_metrics

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs a Java runtime")


@pytest.fixture(scope="module")
def scored():
    """One scoring call (each starts Java three times) for the hand-computed cases below.

    Clips: `a` and `b` are predicted exactly (after PTB tokenisation: lower case, punctuation dropped); `c` is a
    two-word prefix of its six-word reference; `d` shares no word with its references."""
    predictions = {"a": "A cat sits.", "b": "a dog runs", "c": "birds sing", "d": "zzz qqq"}
    references = {
        "a": ["a cat sits"],
        "b": ["A dog runs!"],
        "c": ["birds sing loudly in the morning"],
        "d": ["rain falls on a roof", "heavy rain"],
    }
    return caption_metrics(predictions, references), predictions, references


@needs_java
def test_cider_d_hand_computed_on_two_identical_captions():
    # Two clips, prediction == reference. 'a' occurs in both clips' references, so its idf is log(2/2) = 0; every
    # other n-gram has idf log 2 > 0. Per n: cosine of identical vectors = 1 for n = 1, 2, 3; there are no 4-grams
    # (3 words), so n = 4 contributes 0. No length penalty (same length). CIDEr-D = 10 * (1 + 1 + 1 + 0) / 4 = 7.5.
    result = caption_metrics({"a": "A cat sits.", "b": "a dog runs"}, {"a": ["a cat sits"], "b": ["A dog runs!"]})
    assert result["metrics"]["CIDEr-D"] == pytest.approx(7.5)
    assert result["metrics"]["ROUGE-L"] == pytest.approx(1.0)
    assert result["metrics"]["BLEU-1"] == pytest.approx(1.0)
    assert result["metrics"]["BLEU-3"] == pytest.approx(1.0)
    assert result["metrics"]["METEOR"] == pytest.approx(1.0, abs=0.02)
    assert result["num_clips"] == 2


@needs_java
def test_bleu_rouge_cider_hand_computed_on_a_mixed_set(scored):
    result, _, _ = scored
    metrics = result["metrics"]
    # BLEU-1 (corpus level, closest reference length): candidate words 3 + 3 + 2 + 2 = 10, clipped unigram matches
    # 3 + 3 + 2 + 0 = 8; reference length 3 + 3 + 6 + 2 ('heavy rain' is closest to 2 words) = 14 -> brevity
    # penalty exp(1 - 14/10).
    assert metrics["BLEU-1"] == pytest.approx(0.8 * math.exp(1 - 14 / 10), rel=1e-6)
    # ROUGE-L per clip, F with beta = 1.2: a, b = 1; c: LCS 2, P = 1, R = 2/6; d = 0.
    beta2 = 1.2**2
    p, r = 1.0, 2 / 6
    rouge_c = (1 + beta2) * p * r / (r + beta2 * p)
    assert metrics["ROUGE-L"] == pytest.approx((1 + 1 + rouge_c + 0) / 4, rel=1e-6)
    # CIDEr-D is averaged over clips and clip d scores 0: the set score is below that of a, b, c alone, above 0.
    assert 0 < metrics["CIDEr-D"] < 10
    assert metrics["METEOR"] > 0


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MetricUnavailableError, match="Java"):
        caption_metrics({"a": "x"}, {"a": ["x"]})


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(captioning, "_package_dir", lambda: None)
    with pytest.raises(MetricUnavailableError, match="pycocoevalcap"):
        captioning.captioning_requirements()


@pytest.mark.parametrize(
    "predictions, references, error, match",
    [
        ({}, {}, ValueError, "empty"),
        ({"a": "x"}, {}, ValueError, "no captions"),
        ({"a": "x"}, {"a": []}, ValueError, "empty caption list"),
        ({"a": 3}, {"a": ["x"]}, TypeError, "strings"),
    ],
)
def test_bad_inputs(predictions, references, error, match):
    with pytest.raises(error, match=match):
        caption_metrics(predictions, references)
