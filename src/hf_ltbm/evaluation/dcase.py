"""Captioning metrics as the DCASE challenge reports them, through aac-metrics (the challenge's toolkit): SPICE,
SPIDEr = (CIDEr-D + SPICE) / 2 (DCASE 2022's ranking metric), SPIDEr-FL = SPIDEr * (1 - 0.9 * FER) per clip (2023) and
FENSE (2024), with FER, the share of captions the fluency-error detector flags.

These metrics need files that aac-metrics downloads once with `aac-metrics-download` (SPICE's Java code and Stanford
CoreNLP 3.6.0, the FENSE error detector) and two models from the hub (the detector's BERT tokenizer and FENSE's
Sentence-BERT). A metric whose files are missing, or which fails, is reported unavailable with the reason and the
command that installs it; it never stops a run and is never reported as 0. Without a network (`HF_HUB_OFFLINE=1`),
nothing is downloaded.

aac-metrics is pinned to 0.5.4: later releases depend on msclap, which requires transformers < 5.
"""

from __future__ import annotations

import logging as pylogging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from huggingface_hub.constants import is_offline_mode
from transformers.utils import logging

logger = logging.get_logger(__name__)

__all__ = ["DCASE_METRICS", "DEFAULT_ECHECKER", "DEFAULT_SBERT_MODEL", "dcase_metrics"]

DCASE_METRICS = ("SPICE", "SPIDEr", "SPIDEr-FL", "FENSE", "FER")
"""The metrics `dcase_metrics` reports, in the order tables show them."""

DEFAULT_ECHECKER = "echecker_clotho_audiocaps_base"
"""FENSE's fluency-error detector that DCASE uses (SPIDEr-FL and FENSE)."""

DEFAULT_SBERT_MODEL = "paraphrase-TinyBERT-L6-v2"
"""FENSE's Sentence-BERT model."""

_INSTALL = "pip install 'hf-ltbm[eval]'"
_DOWNLOAD = "run `aac-metrics-download` once with internet access"


def _aac_metrics() -> tuple[Any, Optional[str]]:
    """aac-metrics' functional module, or why it cannot be imported."""
    try:
        import aac_metrics.functional as functional
    except ImportError as err:
        if (getattr(err, "name", None) or "").split(".")[0] == "aac_metrics":
            return None, f"aac-metrics is not installed: {_INSTALL}"
        return None, f"aac-metrics cannot be imported ({type(err).__name__}: {err}); reinstall it: {_INSTALL}"
    return functional, None


def _cache_path(cache_path: Optional[Union[str, os.PathLike]]) -> Path:
    if cache_path is not None:
        return Path(cache_path)
    from aac_metrics.utils.globals import get_default_cache_path

    return Path(get_default_cache_path())


def _spice_unavailable_reason(cache_path: Path, java_path: Optional[str]) -> Optional[str]:
    from aac_metrics.functional.spice import check_spice_install
    from aac_metrics.utils.checks import MAX_JAVA_MAJOR_VERSION, MIN_JAVA_MAJOR_VERSION, check_java_path
    from aac_metrics.utils.globals import get_default_java_path

    try:
        check_spice_install(str(cache_path))
    except (FileNotFoundError, NotADirectoryError) as err:
        first = str(err).split(". Maybe")[0]
        return f"SPICE is not installed in aac-metrics' cache ({first}); {_DOWNLOAD}"
    java = java_path or get_default_java_path()  # AAC_METRICS_JAVA_PATH, else `java`
    if shutil.which(java) is None:
        return f"no Java runtime {java!r} (SPICE runs on Java): install one and put it on PATH"
    checks_logger = pylogging.getLogger("aac_metrics.utils.checks")
    level, checks_logger.level = checks_logger.level, pylogging.CRITICAL  # its own error line; ours says more
    try:
        supported = check_java_path(java)
    finally:
        checks_logger.setLevel(level)
    if not supported:
        return (
            f"aac-metrics runs SPICE on Java {MIN_JAVA_MAJOR_VERSION} to {MAX_JAVA_MAJOR_VERSION} only and {java!r} "
            "is another version: install e.g. openjdk-11-jre-headless and set AAC_METRICS_JAVA_PATH to its `java`"
        )
    return None


def _echecker_file(name: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "fense_data" / f"{name}.ckpt"


def _load_echecker(echecker: Union[str, Any], device: str) -> tuple[Any, Any, Optional[str]]:
    """The fluency-error detector and its tokenizer (loaded once for SPIDEr-FL and FENSE), or why not."""
    from transformers import AutoTokenizer

    if isinstance(echecker, str):
        if not _echecker_file(echecker).is_file() and is_offline_mode():
            return None, None, f"the error detector {echecker!r} is not downloaded (offline mode); {_DOWNLOAD}"
        from aac_metrics.functional.fer import BERTFlatClassifier

        verbosity = logging.get_verbosity()  # aac-metrics sets transformers' verbosity to ERROR while it loads
        try:
            echecker = BERTFlatClassifier.from_pretrained(echecker, device=device)
        except Exception as err:
            return None, None, f"the error detector {echecker!r} could not be loaded ({_short(err)}); {_DOWNLOAD}"
        finally:
            logging.set_verbosity(verbosity)
    try:
        tokenizer = AutoTokenizer.from_pretrained(echecker.model_type)
    except Exception as err:
        name = echecker.model_type
        return None, None, f"the error detector's tokenizer {name!r} could not be loaded ({_short(err)})"
    return echecker.eval(), tokenizer, None


def _short(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _scalar(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def dcase_metrics(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    cache_path: Optional[Union[str, os.PathLike]] = None,
    java_path: Optional[str] = None,
    device: str = "cuda_if_available",
    echecker: Union[str, Any] = DEFAULT_ECHECKER,
    sbert_model: Union[str, Any] = DEFAULT_SBERT_MODEL,
) -> dict[str, Any]:
    """The DCASE captioning metrics of a whole set, each computed where its requirements are met.

    Args:
        candidates: one caption per clip, already PTB-tokenised (lower case, punctuation dropped), as aac-metrics'
            `evaluate(preprocess=True)` passes them on.
        references: the clips' reference captions, tokenised the same way.
        cache_path: aac-metrics' cache folder (default: its own, `~/.cache`), where `aac-metrics-download` puts SPICE.
        java_path: the Java executable for SPICE (default: aac-metrics' `AAC_METRICS_JAVA_PATH`, else `java`);
            aac-metrics 0.5.4 accepts Java 8 to 13.
        device: where the error detector and Sentence-BERT run (aac-metrics' `"cuda_if_available"` by default).
        echecker: the detector's name, or a loaded `aac_metrics.functional.fer.BERTFlatClassifier`.
        sbert_model: FENSE's Sentence-BERT, a hub id or a loaded `SentenceTransformer`.

    Returns:
        `{"metrics": {name: corpus score}, "unavailable": {name: reason}}` over `DCASE_METRICS`: every metric is in
        exactly one of the two. SPICE, SPIDEr, SPIDEr-FL, FENSE and FER are in [0, 1] except SPIDEr (CIDEr-D's scale,
        0-10, averaged with SPICE).
    """
    if len(candidates) != len(references):
        raise ValueError(f"`candidates` has {len(candidates)} captions but `references` has {len(references)} lists.")
    functional, missing = _aac_metrics()
    if missing is not None:
        return {"metrics": {}, "unavailable": dict.fromkeys(DCASE_METRICS, missing)}
    cands, refs = list(candidates), [list(r) for r in references]
    cache = _cache_path(cache_path)
    metrics: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    detector, tokenizer, fer_reason = _load_echecker(echecker, device)
    fer_kwargs = {"echecker": detector, "echecker_tokenizer": tokenizer, "device": device}

    spice_reason = _spice_unavailable_reason(cache, java_path)
    if spice_reason is None:
        paths = {"cache_path": str(cache), "java_path": java_path}
        try:
            if fer_reason is None:
                corpus, _ = functional.spider_fl(cands, refs, **paths, **fer_kwargs)
            else:
                corpus, _ = functional.spider(cands, refs, **paths)
        except Exception as err:  # a Java/CoreNLP failure is reported, never turned into a 0
            spice_reason = f"SPICE failed ({_short(err)})"
        else:
            names = {"spice": "SPICE", "spider": "SPIDEr", "spider_fl": "SPIDEr-FL", "fer": "FER"}
            metrics.update({names[k]: _scalar(v) for k, v in corpus.items() if k in names})
    if spice_reason is not None:
        unavailable.update(SPICE=spice_reason, SPIDEr=f"needs SPICE: {spice_reason}")
        if fer_reason is None:
            unavailable["SPIDEr-FL"] = f"needs SPICE: {spice_reason}"
    if fer_reason is not None:
        unavailable.update({"SPIDEr-FL": f"needs FER: {fer_reason}", "FENSE": fer_reason, "FER": fer_reason})
    else:
        try:
            corpus, _ = functional.fense(cands, refs, sbert_model=sbert_model, **fer_kwargs)
        except Exception as err:
            unavailable["FENSE"] = f"FENSE failed ({_short(err)}); with internet access the hub model downloads"
        else:
            metrics["FENSE"] = _scalar(corpus["fense"])
            metrics.setdefault("FER", _scalar(corpus["fer"]))
        if "FER" not in metrics:
            try:
                metrics["FER"] = _scalar(functional.fer(cands, refs, **fer_kwargs)[0]["fer"])
            except Exception as err:
                unavailable["FER"] = f"FER failed ({_short(err)})"
    for name, reason in unavailable.items():
        logger.info(f"{name} unavailable: {reason}")
    return {"metrics": metrics, "unavailable": unavailable}
