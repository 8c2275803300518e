"""The paired statistics of a study as markdown, CSV and a forest plot (``paired.md``, ``paired.csv``, ``paired.png``).

The figures come from ``paired.compare``; the plot shows, per metric, each
variant's mean paired difference from the reference with its 95% bootstrap
interval, filled where Holm's p < 0.05.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from PIL import Image, ImageDraw

from .aggregate import direction
from .charts import colour, font
from .paired import Comparison, Summary, compare

ALPHA = 0.05
CSV_COLUMNS = ("metric", "variant", "reference", "mean", "sd", "ci_low", "ci_high", "n", "n_pairs", "mean_diff",
               "diff_ci_low", "diff_ci_high", "wilcoxon_w", "p", "p_holm", "rank_biserial")  # fmt: skip


def write_paired_report(per_variant: dict[str, list[dict[str, str]]], out: Path, metrics: list[str],
                        reference: str, n_boot: int = 2000, seed: int = 0) -> tuple[Path, Path, Path, str]:  # fmt: skip
    """paired.md, paired.csv and paired.png in ``out``; also returns the markdown text."""
    summaries, comparisons = compare(per_variant, reference, metrics, n_boot, seed)
    out.mkdir(parents=True, exist_ok=True)
    text = paired_markdown(summaries, comparisons, reference, metrics, n_boot)
    md = out / "paired.md"
    md.write_text(text, encoding="utf-8")
    csv_path = write_paired_csv(summaries, comparisons, reference, out / "paired.csv")
    return md, csv_path, forest_plot(comparisons, metrics, reference, out / "paired.png"), text


def paired_markdown(summaries: dict[str, dict[str, Summary]], comparisons: list[Comparison], reference: str,
                    metrics: list[str], n_boot: int) -> str:  # fmt: skip
    lines = [f"## Per variant: mean ± sd, 95% bootstrap CI of the mean ({n_boot} resamples), n images", "",
             "| variant | " + " | ".join(f"{m} {direction(m)}".strip() for m in metrics) + " |",
             "|---|" + "---:|" * len(metrics)]  # fmt: skip
    for name, stats in summaries.items():
        lines.append(f"| {name} | " + " | ".join(_summary_cell(stats.get(m)) for m in metrics) + " |")
    lines += ["", f"## Paired against '{reference}' (same rows and images)", "",
              "Δ = variant - reference, mean over pairs with its 95% bootstrap CI; Wilcoxon signed-rank test "
              "(two-sided), W the smaller rank sum; p (Holm) corrected over the variants of each metric; r the "
              "matched-pairs rank-biserial correlation (positive: variant higher).", "",
              "| metric | variant | n pairs | Δ mean [95% CI] | W | p | p (Holm) | r |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c in comparisons:
        star = " *" if c.p_holm is not None and c.p_holm < ALPHA else ""
        lines.append(f"| {c.metric} | {c.variant} | {c.n_pairs} | {_diff_cell(c)} | {_num(c.statistic, '.1f')} | "
                     f"{_p(c.p)} | {_p(c.p_holm)}{star} | {_num(c.rank_biserial, '+.3f')} |")  # fmt: skip
    if not comparisons:
        lines.append("| (no variant shares rows with the reference) | | | | | | | |")
    lines += ["", f"\\* p (Holm) < {ALPHA}."]
    return "\n".join(lines) + "\n"


def csv_rows(summaries: dict[str, dict[str, Summary]], comparisons: list[Comparison], reference: str) -> list[list[str]]:  # fmt: skip
    """One row per metric and variant, in CSV_COLUMNS order (empty cells where a figure does not apply)."""
    by_key = {(c.variant, c.metric): c for c in comparisons}
    rows = []
    metrics = list(dict.fromkeys(m for stats in summaries.values() for m in stats))
    for m in metrics:
        for name, stats in summaries.items():
            s = stats.get(m)
            c = by_key.get((name, m))
            if s is None and c is None:
                continue
            rows.append([m, name, reference, *_cells(s and (s.mean, s.sd, s.ci_low, s.ci_high, s.n), 5),
                         *_cells(c and (c.n_pairs, c.mean_diff, c.ci_low, c.ci_high, c.statistic, c.p, c.p_holm,
                                        c.rank_biserial), 8)])  # fmt: skip
    return rows


def write_paired_csv(summaries: dict[str, dict[str, Summary]], comparisons: list[Comparison], reference: str,
                     path: Path) -> Path:  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        w.writerows(csv_rows(summaries, comparisons, reference))
    return path


def forest_plot(comparisons: list[Comparison], metrics: list[str], reference: str, path: Path) -> Path:
    """One panel per metric: a row per variant, its mean difference and CI around a zero line."""
    variants = list(dict.fromkeys(c.variant for c in comparisons))
    panel_w, row_h, head, left = 360, 22, 40, 130
    panel_h = head + row_h * max(len(variants), 1) + 24
    cols = max(1, min(2, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / cols))
    im = Image.new("RGB", (cols * panel_w, 28 + rows * panel_h), "white")
    d = ImageDraw.Draw(im)
    d.font = font()
    d.text(
        (8, 6),
        f"Paired difference from '{reference}' (mean, 95% bootstrap CI; filled: Holm p < {ALPHA})",
        fill="black",
    )
    for k, metric in enumerate(metrics):
        x0, y0 = (k % cols) * panel_w, 28 + (k // cols) * panel_h
        items = {c.variant: c for c in comparisons if c.metric == metric}
        spans = [v for c in items.values() for v in (c.ci_low, c.ci_high, c.mean_diff) if v is not None]
        half = max([abs(v) for v in spans] + [1e-12]) * 1.1
        lo, hi = x0 + left, x0 + panel_w - 14

        def x(v: float, lo: float = lo, hi: float = hi, half: float = half) -> float:
            return lo + (v + half) / (2 * half) * (hi - lo)

        better = {"↑": " (higher is better)", "↓": " (lower is better)"}.get(direction(metric), "")
        d.text((x0 + 8, y0 + 4), metric + better, fill="black")
        d.line([(x(0.0), y0 + head - 8), (x(0.0), y0 + panel_h - 24)], fill="gray")
        for v in (-half, 0.0, half):
            d.text((x(v) - 14, y0 + panel_h - 20), f"{v:.2g}", fill="gray")
        for j, name in enumerate(variants):
            cy = y0 + head + row_h * j + row_h / 2
            d.text((x0 + 8, cy - 7), name[:18], fill="black")
            c = items.get(name)
            if c is None:
                d.text((x(0.0) + 4, cy - 7), "n/a", fill="gray")
                continue
            if c.ci_low is not None and c.ci_high is not None:
                d.line([(x(c.ci_low), cy), (x(c.ci_high), cy)], fill=colour(j + 1), width=2)
            filled = c.p_holm is not None and c.p_holm < ALPHA
            box = [x(c.mean_diff) - 4, cy - 4, x(c.mean_diff) + 4, cy + 4]
            d.ellipse(box, fill=colour(j + 1) if filled else "white", outline=colour(j + 1), width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG")
    return path


def _cells(values: tuple | None, n: int) -> list[str]:
    return [""] * n if values is None else ["" if v is None else repr(v) for v in values]


def _summary_cell(s: Summary | None) -> str:
    if s is None:
        return "n/a"
    sd = "" if s.sd is None else f" ± {s.sd:.4f}"
    ci = "" if s.ci_low is None else f" [{s.ci_low:.4f}, {s.ci_high:.4f}]"
    return f"{s.mean:.4f}{sd}{ci} (n={s.n})"


def _diff_cell(c: Comparison) -> str:
    ci = "" if c.ci_low is None else f" [{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
    return f"{c.mean_diff:+.4f}{ci}"


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"
