"""The full report of a study folder: tables, paired statistics, charts and the picture grid on one page.

``cxr-runner report RUN_DIR`` reads every ``RUN_DIR/<variant>/``
holding a results.csv (as ``study`` and the cluster shards write them) and
writes, into RUN_DIR: study.md/.csv/.png (mean ± sd), paired.md/.csv/.png
(bootstrap CIs, Wilcoxon against the reference with Holm, effect sizes),
paired_by_<column>.md/.csv for each ``--by`` column (per pathology, side, ...),
pictures.png (the grid of ``pictures.py``), and report.md and report.html
showing all of them.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import RunnerError
from .pictures import picture_grid
from .strata import stratified_paths
from .study import write_study_report

log = logging.getLogger("cxr_counterfactual.runner")


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    tables: list[Path]
    figures: list[Path]


def variant_folders(run_dir: Path, reference: str | None = None) -> dict[str, Path]:
    """{variant: folder} for the subfolders of ``run_dir`` with a results.csv; the reference first."""
    if not run_dir.is_dir():
        raise RunnerError(f"report: {run_dir} is not a folder; expected a study's --out folder")
    found = {p.name: p for p in sorted(run_dir.iterdir()) if (p / "results.csv").is_file()}
    if not found:
        raise RunnerError(f"report: no <variant>/results.csv under {run_dir}; expected the --out folder of a "
                          "study (or of cluster shards) after at least one finished run")  # fmt: skip
    ref = reference or ("full" if "full" in found else None)
    if reference is not None and reference not in found:
        raise RunnerError(f"report: --reference '{reference}' is not a variant folder of {run_dir} "
                          f"(found {', '.join(found)})")  # fmt: skip
    return {ref: found[ref], **found} if ref else found


def write_report(run_dir: Path, variants: dict[str, Path] | None = None, reference: str | None = None,
                 metrics: list[str] | None = None, title: str = "", pictures: int = 8,
                 image_dirs: list[Path] | None = None, n_boot: int = 2000,
                 by: list[str] | None = None) -> ReportFiles:  # fmt: skip
    """Every table and figure of the study in ``run_dir`` (variants: default its result subfolders)."""
    variants = variants or variant_folders(run_dir, reference)
    study_md, study_csv, study_png = write_study_report(
        variants, run_dir, metrics, title, reference, n_boot, by
    )
    tables, figures = [study_md, study_csv], [study_png]
    if (run_dir / "paired.md").is_file() and len(variants) > 1:
        tables += [run_dir / "paired.md", run_dir / "paired.csv"]
        tables += [p for column in by or [] for p in stratified_paths(run_dir, column)]
        figures.append(run_dir / "paired.png")
    grid = picture_grid(variants, run_dir / "pictures.png", pictures, image_dirs) if pictures > 0 else None
    if grid is not None:
        figures.append(grid)
    body = study_md.read_text(encoding="utf-8")
    md = run_dir / "report.md"
    md.write_text(body + "\n" + "".join(f"\n![{f.stem}]({f.name})\n" for f in figures), encoding="utf-8")
    page = run_dir / "report.html"
    page.write_text(to_html(body, figures, title or run_dir.name), encoding="utf-8")
    return ReportFiles(md, page, tables, figures)


def to_html(markdown_text: str, figures: list[Path], title: str) -> str:
    """The report's markdown (headings, paragraphs, pipe tables, bullets) as a standalone HTML page."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child"
           "{text-align:left}img{max-width:100%;display:block;margin:1em 0}</style></head><body>"]  # fmt: skip
    table: list[str] = []
    for line in [*markdown_text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            out.append(_table(table))
            table = []
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<ul><li>{_inline(line[2:])}</li></ul>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    out += [f"<img src='{html.escape(f.name)}' alt='{html.escape(f.stem)}'>" for f in figures]
    return "\n".join(out) + "\n</body></html>\n"


def _table(lines: list[str]) -> str:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    head, body = rows[0], [r for r in rows[1:] if not all(set(c) <= set("-:") for c in r)]
    cells = "".join(f"<th>{_inline(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{cells}</tr>{trs}</table>"


def _inline(text: str) -> str:
    escaped = html.escape(text.replace("\\*", "*"))
    parts = escaped.split("**")
    return "".join(f"<b>{p}</b>" if k % 2 else p for k, p in enumerate(parts))
