"""MMAU's string-match scoring of multiple-choice answers, and accuracy overall, per task and per difficulty.

The rule (MMAU's official evaluation): lower-case both texts and split them into word tokens (`\\b\\w+\\b`). A
prediction is correct iff it contains every token of the answer and no token of a wrong choice, where tokens the wrong
choice shares with the answer do not count against it. An empty prediction is wrong.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["mmau_accuracy", "string_match", "word_tokens"]

_WORD = re.compile(r"\b\w+\b")


def word_tokens(text: str) -> set[str]:
    """The set of lower-cased word tokens (`\\b\\w+\\b`) of `text`."""
    return set(_WORD.findall(text.lower()))


def string_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """Whether `prediction` picks `answer` among `choices` under MMAU's string-match rule (see the module docstring).

    Args:
        answer: the correct choice's text.
        prediction: the model's generated text.
        choices: all the choices, the answer included (compared as token sets, so case and punctuation don't count).
    """
    predicted = word_tokens(prediction)
    if not predicted:
        return False
    wanted = word_tokens(answer)
    if not wanted <= predicted:
        return False
    for choice in choices:
        other = word_tokens(choice)
        if other == wanted:
            continue  # the answer itself (or a choice with the same words)
        if (other - wanted) & predicted:
            return False
    return True


def mmau_accuracy(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy (in %) of MMAU records overall, per task (`sound` / `music` / `speech`) and per difficulty.

    Args:
        records: one mapping per question with `prediction`, `answer`, `choices`, and optionally `task` and
            `difficulty` (records without them count only overall).

    Returns:
        `{"metrics": {"accuracy": ..., "accuracy/sound": ..., "accuracy/easy": ...}, "counts": {...same keys: number of
        questions...}, "num_items": n}`.
    """
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for record in records:
        hit = string_match(record["answer"], record.get("prediction") or "", record["choices"])
        groups = ["accuracy"] + [f"accuracy/{record[k]}" for k in ("task", "difficulty") if record.get(k)]
        for group in groups:
            total[group] += 1
            correct[group] += hit
    if not total:
        raise ValueError("`records` is empty: there is nothing to score.")
    keys = ["accuracy"] + sorted(k for k in total if k != "accuracy")
    return {
        "metrics": {k: 100.0 * correct[k] / total[k] for k in keys},
        "counts": {k: total[k] for k in keys},
        "num_items": total["accuracy"],
    }
