"""The DCASE captioning metrics through aac-metrics: CIDEr-D equal to pycocoevalcap's, FENSE / FER / SPIDEr-FL wired
as aac-metrics computes them (tiny local models stand in for the downloaded ones), and every metric whose files are
missing reported unavailable with the reason and the command that installs it."""

import importlib
import shutil
import sys
from pathlib import Path

import pytest
import torch

from hf_ltbm.evaluation import captioning, dcase
from hf_ltbm.evaluation.captioning import CAPTION_METRICS, caption_metrics
from hf_ltbm.evaluation.dcase import DCASE_METRICS, dcase_metrics

aac_metrics = pytest.importorskip("aac_metrics", reason="aac-metrics comes with the eval and dev extras")
spice_module = importlib.import_module("aac_metrics.functional.spice")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer needs a Java runtime")

# Clips in the style of Clotho: case, punctuation, several references, partial and no overlap, shared n-grams.
PREDICTIONS = {
    "rain.wav": "Rain falls steadily on a metal roof.",
    "birds.wav": "birds are chirping in the forest",
    "car.wav": "A car drives past, then a horn honks!",
    "crowd.wav": "people talk in a crowded room",
    "water.wav": "water runs",
    "door.wav": "zzz qqq",
    "dog.wav": "A dog barks while a man talks.",
    "wind.wav": "wind blows through the trees and leaves rustle",
}
REFERENCES = {
    "rain.wav": ["Rain is falling on a metal roof.", "Heavy rain falls onto a tin roof", "rain hits the roof"],
    "birds.wav": ["Birds chirp in a forest.", "Many birds are singing in the woods", "birds chirping"],
    "car.wav": ["A car passes by and honks its horn.", "a vehicle drives past; someone honks"],
    "crowd.wav": ["A crowd of people talking.", "People are chatting in a busy room.", "many voices"],
    "water.wav": ["Water runs from a tap into a sink.", "a faucet is running"],
    "door.wav": ["A door creaks open and slams shut.", "a wooden door is closed"],
    "dog.wav": ["A dog is barking and a man speaks.", "a man talks while his dog barks", "dog barking"],
    "wind.wav": ["Wind blows through trees.", "leaves rustle in the strong wind", "a windy day in a forest"],
}


@pytest.fixture(scope="module")
def aac_cache(tmp_path_factory):
    """An aac-metrics cache holding the PTB tokenizer that `aac-metrics-download` fetches: the Stanford CoreNLP 3.4.1
    jar from the COCO caption code, the same file pycocoevalcap bundles."""
    jar = captioning._package_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    cache = tmp_path_factory.mktemp("aac-cache")
    (cache / "aac-metrics" / "stanford_nlp").mkdir(parents=True)
    shutil.copy(jar, cache / "aac-metrics" / "stanford_nlp" / jar.name)
    return cache


@needs_java
def test_aac_metrics_cider_d_equals_the_pycocoevalcap_number(aac_cache, monkeypatch):
    from aac_metrics.functional.evaluate import evaluate
    from aac_metrics.utils import tokenization

    # aac-metrics 0.5.4 allows Java 8-13 for its Java tools (for SPICE's sake); its PTB tokenizer is the jar that
    # pycocoevalcap runs on Java 17, so the gate is lifted for the tokenizer only.
    monkeypatch.setattr(tokenization, "check_java_path", lambda path: True)

    keys = sorted(PREDICTIONS)
    ours = caption_metrics(PREDICTIONS, REFERENCES, dcase=False)["metrics"]["CIDEr-D"]
    # aac-metrics end to end: its own PTB preprocessing (the same jar), its own CIDEr-D
    corpus, sents = evaluate(
        [PREDICTIONS[k] for k in keys],
        [REFERENCES[k] for k in keys],
        preprocess=True,
        metrics=["cider_d"],
        cache_path=str(aac_cache),
        device="cpu",
    )
    assert 0.5 < ours < 10
    assert float(corpus["cider_d"]) == pytest.approx(ours, rel=1e-9, abs=1e-12)
    assert float(sents["cider_d"][keys.index("door.wav")]) == 0.0


def _tiny_bert(folder: Path) -> Path:
    """A tiny random BERT with a word-level vocabulary of the fixture's words (stands in for FENSE's models)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = {w for text in [*PREDICTIONS.values(), *sum(REFERENCES.values(), [])] for w in text.lower().split()}
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(w.strip(".,!;") for w in words)]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fense_models(tmp_path_factory):
    """(error detector flagging every caption, Sentence-BERT), both built on a tiny local BERT."""
    from aac_metrics.functional.fer import BERTFlatClassifier
    from sentence_transformers import SentenceTransformer

    folder = _tiny_bert(tmp_path_factory.mktemp("bert"))
    detector = BERTFlatClassifier(str(folder), num_classes=6)  # classes: 5 error kinds, then "error"
    with torch.no_grad():
        detector.clf.weight.zero_()
        detector.clf.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 5.0]))  # P(error) = 0.993 > 0.9
    return detector, SentenceTransformer(str(folder), device="cpu")


def _tokenized():
    keys = sorted(PREDICTIONS)
    clean = str.maketrans("", "", ".,!;")
    return (
        [PREDICTIONS[k].lower().translate(clean) for k in keys],
        [[r.lower().translate(clean) for r in REFERENCES[k]] for k in keys],
    )


def test_fense_and_fer_are_aac_metrics_numbers(fense_models, tmp_path):
    from aac_metrics.functional import fense

    detector, sbert = fense_models
    cands, refs = _tokenized()
    result = dcase_metrics(cands, refs, cache_path=tmp_path, device="cpu", echecker=detector, sbert_model=sbert)
    expected, _ = fense(cands, refs, sbert_model=sbert, echecker=detector, device="cpu")
    assert result["metrics"]["FENSE"] == pytest.approx(float(expected["fense"]))
    assert result["metrics"]["FER"] == 1.0  # every caption flagged: FENSE = SBERT similarity * (1 - 0.9)
    assert result["metrics"]["FENSE"] == pytest.approx(0.1 * float(expected["sbert_sim"]))
    # SPICE has no files in this empty cache: it and what needs it are unavailable, with the command
    assert set(result["unavailable"]) == {"SPICE", "SPIDEr", "SPIDEr-FL"}
    assert "aac-metrics-download" in result["unavailable"]["SPICE"]
    assert set(result["metrics"]) | set(result["unavailable"]) == set(DCASE_METRICS)


def test_spider_fl_penalises_each_flagged_clip_as_dcase_2023_defines_it(fense_models, tmp_path, monkeypatch):
    """SPICE (Java + CoreNLP 3.6.0) cannot run here: a stand-in gives known per-clip scores, so that SPIDEr and
    SPIDEr-FL can be checked against their definitions on aac-metrics' own CIDEr-D."""
    from aac_metrics.functional import cider_d

    spider = importlib.import_module("aac_metrics.functional.spider")  # the package exports a function of that name

    detector, sbert = fense_models
    cands, refs = _tokenized()
    spice_scores = torch.linspace(0.1, 0.8, len(cands), dtype=torch.float64)

    def fake_spice(candidates, mult_references, return_all_scores=True, **kwargs):
        return {"spice": spice_scores.mean()}, {"spice": spice_scores}

    monkeypatch.setattr(spider, "spice", fake_spice)
    monkeypatch.setattr(dcase, "_spice_unavailable_reason", lambda cache, java: None)
    result = dcase_metrics(cands, refs, cache_path=tmp_path, device="cpu", echecker=detector, sbert_model=sbert)
    cider = cider_d(cands, refs)[1]["cider_d"]
    spider_clip = (cider + spice_scores) / 2
    assert result["metrics"]["SPICE"] == pytest.approx(float(spice_scores.mean()))
    assert result["metrics"]["SPIDEr"] == pytest.approx(float(spider_clip.mean()))
    assert result["metrics"]["SPIDEr-FL"] == pytest.approx(float((spider_clip * (1 - 0.9 * 1.0)).mean()))
    assert result["unavailable"] == {}


def test_missing_files_are_unavailable_with_the_command_never_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no detector downloaded
    cands, refs = _tokenized()
    result = dcase_metrics(cands, refs, cache_path=tmp_path / "empty")
    assert result["metrics"] == {}
    assert set(result["unavailable"]) == set(DCASE_METRICS)
    assert "aac-metrics-download" in result["unavailable"]["SPICE"]
    assert "echecker_clotho_audiocaps_base" in result["unavailable"]["FENSE"]
    assert "aac-metrics-download" in result["unavailable"]["SPIDEr-FL"]
    monkeypatch.setattr(spice_module, "check_spice_install", lambda cache_path: None)  # as if downloaded
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "no Java runtime" in dcase_metrics(cands, refs, cache_path=tmp_path)["unavailable"]["SPICE"]


@needs_java
def test_a_java_that_aac_metrics_does_not_run_spice_on_is_named(tmp_path, monkeypatch):
    from aac_metrics.utils import checks

    monkeypatch.setattr(spice_module, "check_spice_install", lambda cache_path: None)  # as if downloaded
    monkeypatch.setattr(checks, "_get_java_version", lambda path: "17.0.15")
    cands, refs = _tokenized()
    reason = dcase_metrics(cands, refs, cache_path=tmp_path)["unavailable"]["SPICE"]
    assert "Java 8 to 13" in reason and "AAC_METRICS_JAVA_PATH" in reason


def test_without_aac_metrics_every_dcase_metric_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "aac_metrics", None)  # import fails as when it is not installed
    monkeypatch.setitem(sys.modules, "aac_metrics.functional", None)
    cands, refs = _tokenized()
    result = dcase_metrics(cands, refs)
    assert result["metrics"] == {}
    reason = "aac-metrics is not installed: pip install 'hf-ltbm[eval]'"
    assert result["unavailable"] == dict.fromkeys(DCASE_METRICS, reason)


@needs_java
def test_caption_metrics_reports_every_metric_exactly_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    result = caption_metrics(PREDICTIONS, REFERENCES, dcase_options={"cache_path": tmp_path})
    assert set(result["metrics"]) | set(result["unavailable"]) == set(CAPTION_METRICS)
    assert not set(result["metrics"]) & set(result["unavailable"])
    assert all(value != 0 or name == "FER" for name, value in result["metrics"].items())


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="`candidates` has 1 captions but `references` has 2"):
        dcase_metrics(["a"], [["a"], ["b"]])
