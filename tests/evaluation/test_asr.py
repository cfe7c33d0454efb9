"""WER / CER after Whisper's English normalisation, against counts made by hand."""

import json
import sys

import pytest

from hf_ltbm.evaluation.asr import asr_metrics, asr_requirements, english_normalizer
from hf_ltbm.evaluation.captioning import MetricUnavailableError

pytest.importorskip("jiwer", reason="jiwer comes with the eval and dev extras")

SPELLING = {"colour": "color", "grey": "gray"}
REFERENCES = {
    "u1": "HE HOPED THERE WOULD BE STEW FOR DINNER",
    "u2": "THE COLOUR OF THE SKY WAS GREY AT TWENTY FIVE PAST SIX",
    "u3": "MISTER QUILTER IS THE APOSTLE",
    "u4": "STUFF IT INTO YOU",
    "unused": "NOT PREDICTED",
}
PREDICTIONS = {
    "u1": "Hmm, he hoped there would be stew for dinner!",  # filler word and punctuation: no error
    "u2": "The color of the sky was gray at 25 past 6.",  # spellings and numbers: no error with the list
    "u3": "Mr. Quilter is apostle",  # "mister" spelled out; "the" deleted: 1 error
    "u4": "",  # 4 deletions
}


def test_wer_and_cer_are_corpus_rates_after_whisper_normalisation():
    result = asr_metrics(PREDICTIONS, REFERENCES, spelling_mapping=SPELLING)
    # normalised reference words: 8 + 11 ("the color of the sky was gray at 25 past 6") + 5 + 4 = 28; edits 0+0+1+4
    assert result["counts"] == {
        "reference_words": 28,
        "substitutions": 0,
        "deletions": 5,
        "insertions": 0,
        "reference_characters": 39 + 42 + 29 + 17,
    }
    assert result["metrics"]["WER"] == pytest.approx(100 * 5 / 28)
    # characters (spaces included): u3 loses "the " (4), u4 all 17
    assert result["metrics"]["CER"] == pytest.approx(100 * (4 + 17) / (39 + 42 + 29 + 17))
    assert result["num_items"] == 4 and result["notes"] == []
    assert result["normalization"]["spelling_mapping"] == "given mapping"


def test_without_the_spelling_list_spelling_variants_count_and_a_note_says_so(tmp_path):
    # the tests run offline: Whisper's list cannot be read from the hub
    result = asr_metrics(PREDICTIONS, REFERENCES)
    assert result["counts"]["substitutions"] == 2  # colour/color, grey/gray
    assert result["metrics"]["WER"] == pytest.approx(100 * 7 / 28)
    assert result["normalization"]["spelling_mapping"].startswith("missing (openai/whisper-large-v3/normalizer.json")
    assert "spelling list" in result["notes"][0]
    # the list as a normalizer.json file, as Whisper's tokenizers ship it
    path = tmp_path / "normalizer.json"
    path.write_text(json.dumps(SPELLING))
    normalize, spelling = english_normalizer(path)
    assert spelling == str(path) and normalize("Grey colour") == "gray color"


def test_a_perfect_and_an_empty_transcript():
    assert asr_metrics({"a": "Stew for dinner."}, {"a": "STEW FOR DINNER"}, spelling_mapping={})["metrics"] == {
        "WER": 0.0,
        "CER": 0.0,
    }
    assert asr_metrics({"a": ""}, {"a": "STEW FOR DINNER"}, spelling_mapping={})["metrics"]["WER"] == 100.0


@pytest.mark.parametrize(
    "predictions, references, error, match",
    [
        ({}, {"a": "x"}, ValueError, "empty"),
        ({"a": "x"}, {}, ValueError, "no transcript"),
        ({"a": 5}, {"a": "x"}, TypeError, "strings"),
        ({"a": "x"}, {"a": "Hmm, uh!"}, ValueError, "empty after normalisation"),
    ],
)
def test_bad_input_is_refused(predictions, references, error, match):
    with pytest.raises(error, match=match):
        asr_metrics(predictions, references, spelling_mapping={})


def test_without_jiwer_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jiwer", None)
    with pytest.raises(MetricUnavailableError, match=r"jiwer: pip install 'hf-ltbm\[eval\]'"):
        asr_requirements()
