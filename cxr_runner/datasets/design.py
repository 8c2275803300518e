"""The seeded, balanced design of a counterfactual study: which film gets which pathology, side, extent and seed.

Cells are pathology x side x extent. Every pathology gets the same number of
rows (``per_cell`` x the number of side levels x the number of extents):
sided pathologies split them evenly over ``sides``; cardiomegaly (central)
and edema (bilateral) have the single side level ``bilateral`` and take
``per_cell`` x len(sides) rows per extent. Films are drawn without
replacement from the healthy sources, shuffled by ``seed``, at most one row
per patient until every patient has one (then the next film of each patient);
the row order is shuffled too, so that every shard of ``--shard i/n`` gets a
mix of cells. Each row's sampler seed is drawn from the same generator. The
same sources and arguments always give the same manifest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import RunnerError
from .layouts import Source

SIDED = ("effusion", "pneumothorax", "consolidation", "opacity", "atelectasis")
UNSIDED = {"cardiomegaly": "bilateral", "edema": "bilateral"}
PHRASES = {  # prompt phrase, words the attention modules weight
    "effusion": ("pleural effusion", "pleural, effusion"),
    "pneumothorax": ("pneumothorax", "pneumothorax"),
    "consolidation": ("consolidation", "consolidation"),
    "opacity": ("lung opacity", "opacity"),
    "atelectasis": ("atelectasis", "atelectasis"),
    "cardiomegaly": ("cardiomegaly", "cardiomegaly"),
    "edema": ("pulmonary edema", "edema"),
}


@dataclass(frozen=True)
class Cell:
    pathology: str
    side: str
    extent: float


def cells(pathologies: list[str], sides: list[str], extents: list[float], per_cell: int) -> list[Cell]:
    """Every cell repeated as often as the balance needs (see the module text)."""
    unknown = [p for p in pathologies if p not in PHRASES]
    if unknown:
        raise RunnerError(f"--pathologies: {unknown} unknown; expected some of {', '.join(PHRASES)}")
    bad_sides = [s for s in sides if s not in ("left", "right", "bilateral")]
    if bad_sides or not sides:
        raise RunnerError(f"--sides: expected left, right and/or bilateral; got {sides}")
    bad = [e for e in extents if not 0 < e <= 1]
    if bad or not extents:
        raise RunnerError(f"--extents: expected values in (0, 1], the prior's extent; got {extents}")
    if per_cell < 1:
        raise RunnerError(f"--per-cell {per_cell}: expected 1 or more rows per cell")
    out = []
    for pathology in pathologies:
        for extent in extents:
            if pathology in UNSIDED:
                out += [Cell(pathology, UNSIDED[pathology], extent)] * (per_cell * len(sides))
            else:
                for side in sides:
                    out += [Cell(pathology, side, extent)] * per_cell
    return out


def draw_sources(sources: list[Source], n: int, rng: random.Random) -> list[Source]:
    """``n`` films without replacement, spread over patients first (one per patient per round)."""
    if n > len(sources):
        raise RunnerError(f"the design needs {n} films but only {len(sources)} healthy films with CheXmask masks "
                          "were found; lower --per-cell, drop pathologies/extents, or lower --min-quality")  # fmt: skip
    by_patient: dict[str, list[Source]] = {}
    for s in sorted(sources, key=lambda s: (s.patient, str(s.image))):
        by_patient.setdefault(s.patient or str(s.image), []).append(s)
    patients = sorted(by_patient)
    rng.shuffle(patients)
    for films in by_patient.values():
        rng.shuffle(films)
    order = [by_patient[p][k] for k in range(max(map(len, by_patient.values()))) for p in patients
             if k < len(by_patient[p])]  # fmt: skip
    return order[:n]


def design_rows(sources: list[Source], cell_list: list[Cell], seed: int) -> list[tuple[Source, Cell, int]]:
    """(film, cell, sampler seed) per row, in a seeded shuffled order."""
    rng = random.Random(seed)
    films = draw_sources(sources, len(cell_list), rng)
    shuffled = list(cell_list)
    rng.shuffle(shuffled)
    return [(film, cell, rng.randrange(2**31)) for film, cell in zip(films, shuffled, strict=True)]


def prompt_cells(cell: Cell, view: str) -> dict[str, str]:
    """The prompt text and attention words of a row (the workflows' text inputs are mapped to these columns)."""
    phrase, words = PHRASES[cell.pathology]
    where = "" if cell.pathology in UNSIDED else f"{cell.side} "
    return {"prompt": f"chest x-ray, {view or 'PA'} view, {where}{phrase}", "words": words}
