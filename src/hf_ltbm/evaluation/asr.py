"""Speech-recognition scoring: word and character error rates (jiwer) after Whisper's English text normalisation.

Both the transcript and the reference go through transformers' `EnglishTextNormalizer` (Whisper's: lower case,
punctuation and filler words dropped, numbers and symbols written as digits, contractions expanded, British spellings
mapped to American ones) before the rates are counted, as Whisper, the Open ASR Leaderboard and the published
Qwen2-Audio numbers do. The British-to-American spelling list is Whisper's `normalizer.json`, read from the hub copy
of a Whisper tokenizer (`openai/whisper-large-v3`) once and cached; where it cannot be had (offline, never downloaded)
the rest of the normalisation still runs and the metrics record that the spelling list was missing, since WER then
counts spelling variants as errors.

Rates are corpus-level, in percent: the edits of all utterances over the words (characters) of all references, not a
mean of per-utterance rates.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

from transformers.utils import logging

from .captioning import MetricUnavailableError

logger = logging.get_logger(__name__)

__all__ = ["ASR_METRICS", "SPELLING_SOURCE", "asr_metrics", "asr_requirements", "english_normalizer"]

ASR_METRICS = ("WER", "CER")
"""Metric names in the order tables show them (both in percent, lower is better)."""

SPELLING_SOURCE = ("openai/whisper-large-v3", "normalizer.json")
"""Where Whisper's British-to-American spelling list is read from (hub repository, file)."""


def asr_requirements() -> None:
    """Raises `MetricUnavailableError` unless jiwer is installed (checked before a run starts)."""
    try:
        import jiwer  # noqa: F401
    except ImportError as err:
        raise MetricUnavailableError(
            "Speech recognition (WER, CER) needs jiwer: pip install 'hf-ltbm[eval]' (or pip install jiwer)."
        ) from err


def _spelling_mapping() -> tuple[dict[str, str], str]:
    """Whisper's spelling list and where it came from (an empty list and the reason when it cannot be read)."""
    from huggingface_hub import hf_hub_download

    repo_id, filename = SPELLING_SOURCE
    try:
        path = hf_hub_download(repo_id, filename)
    except Exception as err:  # offline or unreachable
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        return {}, f"missing ({repo_id}/{filename} could not be read: {reason})"
    return json.loads(Path(path).read_text(encoding="utf-8")), f"{repo_id}/{filename}"


def english_normalizer(
    spelling_mapping: Optional[Union[Mapping[str, str], str, os.PathLike]] = None,
) -> tuple[Any, str]:
    """Whisper's English text normaliser and a description of its spelling list.

    Args:
        spelling_mapping: British -> American spellings, as a mapping or a `normalizer.json` path; default: Whisper's
            list from the hub (`SPELLING_SOURCE`), or none when it cannot be read.

    Returns:
        `(normalizer, spelling)`: a callable str -> str, and where the spelling list came from (`"missing (...)"`
        when there is none).
    """
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    if spelling_mapping is None:
        mapping, spelling = _spelling_mapping()
    elif isinstance(spelling_mapping, Mapping):
        mapping, spelling = dict(spelling_mapping), "given mapping"
    else:
        mapping = json.loads(Path(spelling_mapping).read_text(encoding="utf-8"))
        spelling = str(spelling_mapping)
    if not mapping:
        logger.warning(
            f"Whisper's spelling list is {spelling}: WER counts British/American spelling variants as errors. With "
            "internet access it downloads once."
        )
    return EnglishTextNormalizer(mapping), spelling


def asr_metrics(
    predictions: Mapping[str, str],
    references: Mapping[str, str],
    *,
    spelling_mapping: Optional[Union[Mapping[str, str], str, os.PathLike]] = None,
) -> dict[str, Any]:
    """WER and CER of the transcripts in `predictions` against `references`, after Whisper's English normalisation.

    Args:
        predictions: utterance id -> the model's transcript.
        references: utterance id -> the reference transcript (ids beyond those in `predictions` are ignored).
        spelling_mapping: see `english_normalizer`.

    Returns:
        `{"metrics": {"WER": %, "CER": %}, "counts": {...}, "normalization": {...}, "notes": [...], "num_items": n}`;
        `counts` holds the reference words and characters and the word edits (substitutions, deletions,
        insertions); `notes` says when the spelling list was missing (the report shows it).
    """
    asr_requirements()
    import jiwer

    if not predictions:
        raise ValueError("`predictions` is empty: there is nothing to score.")
    missing = [key for key in predictions if key not in references]
    if missing:
        raise ValueError(f"`references` has no transcript for {len(missing)} prediction id(s), e.g. {missing[:3]}.")
    bad = [key for key in predictions if not isinstance(predictions[key], str) or not isinstance(references[key], str)]
    if bad:
        raise TypeError(f"Transcripts must be strings; id(s) {bad[:3]} are not.")
    normalize, spelling = english_normalizer(spelling_mapping)
    keys = sorted(predictions)
    refs = [normalize(references[k]) for k in keys]
    empty = [k for k, ref in zip(keys, refs) if not ref.split()]
    if empty:
        raise ValueError(f"Reference transcript(s) {empty[:3]} are empty after normalisation; WER needs words.")
    hyps = [normalize(predictions[k]) for k in keys]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    notes = []
    if spelling.startswith("missing"):
        notes.append(f"normalised without Whisper's British-to-American spelling list ({spelling})")
    return {
        "metrics": {"WER": 100.0 * words.wer, "CER": 100.0 * chars.cer},
        "counts": {
            "reference_words": sum(len(r.split()) for r in refs),
            "substitutions": words.substitutions,
            "deletions": words.deletions,
            "insertions": words.insertions,
            "reference_characters": sum(len(r) for r in refs),
        },
        "normalization": {"normalizer": "Whisper EnglishTextNormalizer (transformers)", "spelling_mapping": spelling},
        "notes": notes,
        "num_items": len(keys),
    }
