"""Paired statistics per design cell: the same tables for each value of a manifest column (``--by pathology``).

For each level of ``row.<column>`` (a pathology, a side, an extent), the
lines of every variant with that value are compared as in ``paired.py``:
summaries with bootstrap CIs and n, Wilcoxon against the reference with
Holm's correction over the variants of each metric within the level. Written
to ``paired_by_<column>.md`` (a section per level) and ``.csv`` (a ``level``
column before the paired CSV's).
"""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import RunnerError
from .paired import compare
from .paired_report import CSV_COLUMNS, csv_rows, paired_markdown


def levels(per_variant: dict[str, list[dict[str, str]]], column: str) -> list[str]:
    """The values of ``row.<column>`` among the ok lines, in first-seen order."""
    key = "row." + column
    found = [
        line[key]
        for lines in per_variant.values()
        for line in lines
        if line.get("status") == "ok" and key in line
    ]
    if not found:
        present = sorted(
            {
                c[4:]
                for lines in per_variant.values()
                for line in lines[:1]
                for c in line
                if c.startswith("row.")
            }
        )
        raise RunnerError(f"--by {column}: the results have no manifest column '{column}' (they have "
                          f"{', '.join(present) or 'none'})")  # fmt: skip
    return list(dict.fromkeys(found))


def write_stratified(per_variant: dict[str, list[dict[str, str]]], out: Path, metrics: list[str], reference: str,
                     column: str, n_boot: int = 2000, seed: int = 0) -> tuple[Path, Path]:  # fmt: skip
    """paired_by_<column>.md and .csv in ``out``."""
    key = "row." + column
    sections: list[str] = []
    tables: list[list[str]] = []
    for level in levels(per_variant, column):
        subset = {name: [x for x in lines if x.get(key) == level] for name, lines in per_variant.items()}
        summaries, comparisons = compare(subset, reference, metrics, n_boot, seed)
        text = paired_markdown(summaries, comparisons, reference, metrics, n_boot).replace("## ", "### ")
        sections.append(f"## {column} = {level}\n\n" + text)
        tables += [[level, *row] for row in csv_rows(summaries, comparisons, reference)]
    md, csv_path = stratified_paths(out, column)
    md.write_text(f"# Paired statistics by {column}\n\n" + "\n".join(sections), encoding="utf-8")
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["level", *CSV_COLUMNS])
        writer.writerows(tables)
    return md, csv_path


def stratified_paths(out: Path, column: str) -> tuple[Path, Path]:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in column)
    return out / f"paired_by_{safe}.md", out / f"paired_by_{safe}.csv"
