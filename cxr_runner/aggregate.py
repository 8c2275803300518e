"""Mean and standard deviation per metric per variant, from results CSVs, as a markdown table.

Which metrics a table shows by default, and which way each is better, come from
the pack's metric registry (cxr_core/metrics/registry.py).

Input: each variant's ``results.csv`` (``metric.<name>`` columns, one line per
image). Only lines with status ``ok`` count; empty cells, text and booleans are
not numbers and are left out, and so are infinite values (PSNR of identical
images), which the table notes. The standard deviation is the sample one
(n - 1); with one value there is none.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import NamedTuple

from .results import read_results_csv
from .shared import registry

# the metric registry (cxr_core/metrics/registry.py) decides the default columns and each one's arrow
DEFAULT_METRICS = tuple(registry.summary_columns())
# record fields that are not figures to tabulate, nor metrics with no better direction outside the defaults
BOOKKEEPING = (*registry.RECORD_FIELDS,
               *(m.name for m in registry.METRICS if not m.better and not m.summary))  # fmt: skip


class Stat(NamedTuple):
    mean: float
    std: float | None  # sample standard deviation; None for a single value
    n: int  # finite values
    non_finite: int = 0


Table = dict[str, dict[str, Stat]]  # variant -> metric -> Stat


def summarize(values: list[float]) -> Stat | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return Stat(statistics.fmean(finite), std, len(finite), len(values) - len(finite))


def metric_values(lines: list[dict[str, str]]) -> dict[str, list[float]]:
    """{metric: values} over the ok lines of a results CSV (numeric cells of ``metric.*`` columns)."""
    out: dict[str, list[float]] = {}
    for line in lines:
        if line.get("status") != "ok":
            continue
        for column, cell in line.items():
            if not column or not column.startswith("metric."):
                continue
            value = _number(cell)
            if value is not None:
                out.setdefault(column[7:], []).append(value)
    return out


def aggregate(per_variant: dict[str, list[dict[str, str]]], metrics: list[str] | None = None) -> Table:
    """{variant: {metric: Stat}} for the chosen metrics (default: the usual ones present, else every one)."""
    values = {name: metric_values(lines) for name, lines in per_variant.items()}
    present = {m for v in values.values() for m in v}
    if metrics:
        chosen = list(metrics)
    else:
        chosen = [m for m in DEFAULT_METRICS if m in present] or sorted(present - set(BOOKKEEPING))
    table: Table = {}
    for name, vals in values.items():
        table[name] = {}
        for m in chosen:
            stat = summarize(vals.get(m, []))
            if stat is not None:
                table[name][m] = stat
    return table


def metric_order(table: Table) -> list[str]:
    seen: list[str] = []
    for stats in table.values():
        seen.extend(m for m in stats if m not in seen)
    return seen


def direction(metric: str) -> str:
    """↑ or ↓ where the registry says which way is better (``ssim_organs.<organ>`` too); "" otherwise."""
    found = registry.lookup(metric)
    return found.arrow if found else ""


def markdown(table: Table, metrics: list[str] | None = None, rows: dict[str, int] | None = None) -> str:
    """A paper-style table: one line per variant, ``mean ± std`` per metric, the best in bold (↑/↓ known)."""
    metrics = metrics or metric_order(table)
    head = ["variant", "n", *(f"{m} {direction(m)}".strip() for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(metrics)]
    best = {m: _best(table, m) for m in metrics}
    for name, stats in table.items():
        n = rows[name] if rows and name in rows else max((s.n for s in stats.values()), default=0)
        cells = []
        for m in metrics:
            s = stats.get(m)
            text = "n/a" if s is None else _cell(s, n)
            cells.append(f"**{text}**" if s is not None and best[m] == name else text)
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    notes = [f"{name}: {m} had {s.non_finite} infinite values, left out" for name, st in table.items()
             for m, s in st.items() if s.non_finite]  # fmt: skip
    return "\n".join(lines) + "\n" + "".join(f"\n- {note}" for note in notes) + ("\n" if notes else "")


def write_table_csv(table: Table, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "metric", "mean", "std", "n", "non_finite"])
        for name, stats in table.items():
            for m, s in stats.items():
                w.writerow([name, m, repr(s.mean), "" if s.std is None else repr(s.std), s.n, s.non_finite])
    return path


def collect(sources: dict[str, Path]) -> dict[str, list[dict[str, str]]]:
    """{variant: lines of its results.csv}; a source is a results.csv or a folder holding one."""
    return {name: read_results_csv(path) for name, path in sources.items()}


def images_per_variant(per_variant: dict[str, list[dict[str, str]]]) -> dict[str, int]:
    return {name: sum(line.get("status") == "ok" for line in lines) for name, lines in per_variant.items()}


def _cell(s: Stat, n: int) -> str:
    text = f"{s.mean:.4f}" if s.std is None else f"{s.mean:.4f} ± {s.std:.4f}"
    return text if s.n == n else f"{text} (n={s.n})"


def _best(table: Table, metric: str) -> str | None:
    arrow = direction(metric)
    scored = [(s[metric].mean, name) for name, s in table.items() if metric in s]
    if not arrow or len(scored) < 2:
        return None
    return (max if arrow == "↑" else min)(scored)[1]


def _number(cell: str | None) -> float | None:
    if cell is None or cell.strip() in ("", "True", "False"):
        return None
    try:
        return float(cell)
    except ValueError:
        return None
