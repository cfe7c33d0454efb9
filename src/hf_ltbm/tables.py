"""Markdown tables and CSV files, shared by the benchmark and the evaluation reports."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["markdown_table", "write_csv"]


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """A Markdown table of already formatted cells: the first `text_columns` columns are left-aligned (labels), the
    others right-aligned (numbers)."""
    rule = [" --- " if i < text_columns else " ---: " for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Writes `rows` (the first row's keys are the columns) to `path` as UTF-8 CSV."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
