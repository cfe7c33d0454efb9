"""Captioning metrics: the COCO caption evaluation (pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) and the DCASE
challenge's metrics through aac-metrics (SPICE, SPIDEr, SPIDEr-FL, FENSE, FER; see `hf_ltbm.evaluation.dcase`).

Everything is computed once on the whole gathered set: CIDEr-D's document frequencies come from all the references of
the evaluated clips, so per-shard scores would not average to the set's score. Captions go through the PTB tokenizer
(Stanford CoreNLP 3.4.1, bundled with pycocoevalcap) first, as in the COCO, AudioCaps, Clotho and DCASE evaluations;
the DCASE metrics get the same tokens (aac-metrics' own preprocessing runs the same jar). The PTB tokenizer, METEOR
and SPICE run on Java (17 works). A DCASE metric whose requirements are missing is reported unavailable with the
reason, never as 0.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from transformers.utils import logging

from .dcase import DCASE_METRICS, dcase_metrics

logger = logging.get_logger(__name__)

__all__ = [
    "CAPTION_METRICS",
    "MetricUnavailableError",
    "caption_metrics",
    "captioning_requirements",
]

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", *DCASE_METRICS)
"""Metric names in the order tables show them."""


class MetricUnavailableError(RuntimeError):
    """A metric's requirements (pycocoevalcap, Java) are missing; the message says how to install them."""


def _package_dir() -> Optional[Path]:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def captioning_requirements() -> None:
    """Raises `MetricUnavailableError` unless pycocoevalcap and a Java runtime are installed (checked before a
    captioning run starts, so that a long generation run is not lost at scoring time)."""
    if _package_dir() is None:
        raise MetricUnavailableError(
            "Captioning metrics need pycocoevalcap: pip install 'hf-ltbm[eval]' (or pip install pycocoevalcap)."
        )
    if shutil.which("java") is None:
        raise MetricUnavailableError(
            "Captioning metrics need a Java runtime for the PTB tokenizer and METEOR (pycocoevalcap runs bundled "
            "jars): install Java 17, e.g. `apt-get install openjdk-17-jre-headless`, and put `java` on PATH."
        )


def _check(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> None:
    if not predictions:
        raise ValueError("`predictions` is empty: there is nothing to score.")
    missing = [key for key in predictions if key not in references]
    if missing:
        raise ValueError(f"`references` has no captions for {len(missing)} prediction id(s), e.g. {missing[:3]}.")
    empty = [key for key in predictions if not references[key]]
    if empty:
        raise ValueError(f"`references` has an empty caption list for id(s) {empty[:3]}; every clip needs one.")
    bad = [key for key, text in predictions.items() if not isinstance(text, str)]
    if bad:
        raise TypeError(f"Predictions must be strings; id(s) {bad[:3]} are not.")


def caption_metrics(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    dcase: bool = True,
    dcase_options: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Scores captions against references on the whole set at once.

    Args:
        predictions: clip id -> generated caption (one per clip).
        references: clip id -> reference captions (Clotho and AudioCaps have 5 per clip); ids beyond those in
            `predictions` are ignored.
        dcase: also compute the DCASE metrics (SPICE, SPIDEr, SPIDEr-FL, FENSE, FER) where available.
        dcase_options: keyword arguments for `hf_ltbm.evaluation.dcase.dcase_metrics` (`cache_path`, `device`, ...).

    Returns:
        `{"metrics": {"BLEU-1": ..., "CIDEr-D": ..., "SPIDEr-FL": ..., ...}, "unavailable": {"SPICE": reason, ...},
        "num_clips": n}`. Scores are on pycocoevalcap's scale (CIDEr-D around 0-10 with 10 for a perfect match on a
        corpus without shared words; the others in [0, 1]; SPIDEr = (CIDEr-D + SPICE) / 2).
    """
    _check(predictions, references)
    captioning_requirements()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keys = sorted(predictions)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in references[k]] for k in keys})
    res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in keys})
    metrics: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    metrics.update({f"BLEU-{n + 1}": float(score) for n, score in enumerate(bleu)})
    meteor = Meteor()
    try:
        metrics["METEOR"] = float(meteor.compute_score(gts, res)[0])
    finally:
        _close_meteor(meteor)
    metrics["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    metrics["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
    if dcase:
        scored = dcase_metrics([res[k][0] for k in keys], [gts[k] for k in keys], **(dcase_options or {}))
        metrics.update(scored["metrics"])
        unavailable = scored["unavailable"]
    else:
        unavailable = dict.fromkeys(DCASE_METRICS, "not requested")
    return {"metrics": metrics, "unavailable": unavailable, "num_clips": len(keys)}


def _close_meteor(meteor: Any) -> None:
    """Stops METEOR's Java subprocess now rather than at interpreter exit."""
    process = getattr(meteor, "meteor_p", None)
    if process is None:
        return
    with meteor.lock:
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        process.kill()
        process.wait()
