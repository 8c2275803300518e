"""``cxr-runner dataset LAYOUT SOURCE --chexmask CSV --out DIR``: a study folder from a dataset.

Writes into DIR: ``manifest.csv`` (one row per counterfactual: image, masks,
mask_id, pathology, side, extent, seed, prompt, words, target_organs, view,
patient), ``masks/`` (one-row CheXmask CSVs), ``manifest.map.json`` (the
columns' inputs in ``example_workflows/api``), ``study.json`` (the paper's
variants over that manifest) and ``design.json`` (the arguments and counts,
so the design can be stated and repeated).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from ..errors import RunnerError
from .chexmask import normalise_id, row_id, select_masks, write_mask_row
from .design import cells, design_rows, prompt_cells
from .layouts import chexpert, generic, mimic_cxr_jpg

log = logging.getLogger("cxr_counterfactual.runner")
WORKFLOWS = Path(__file__).resolve().parents[2] / "example_workflows" / "api"
COLUMNS = ("image", "masks", "mask_id", "pathology", "side", "extent", "seed", "prompt", "words", "target_organs",
           "view", "patient")  # fmt: skip
MAP = {
    "image": "Radiograph.image",
    "masks": "Organ masks.path",
    "mask_id": "Organ masks.image_id",
    "pathology": "Spatial prior.pathology",
    "side": "Spatial prior.side",
    "extent": "Spatial prior.extent",
    "seed": "Sampler.seed",
    # one CXR Prompt node holds the prompt and its regulated words; the attention nodes read them from it
    "prompt": "Positive prompt.text",
    "words": "Positive prompt.pathology_words",
    "target_organs": "Metrics.target_organs",
}
VARIANTS = {"full": "cxr_counterfactual_full.json", "no gate": "ablation_no_gate.json",
            "no reweight": "ablation_no_reweight.json", "no correction": "ablation_no_correction.json",
            "SDEdit": "plain_sdedit.json", "SD inpainting": "baseline_sd_inpainting.json"}  # fmt: skip


def add_dataset_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="build a balanced manifest + study file from a dataset and CheXmask")
    p.add_argument("layout", choices=("mimic-cxr-jpg", "chexpert", "mapped"))
    p.add_argument("source", type=Path, help="dataset root (MIMIC: holds files/; CheXpert: holds train.csv), "
                   "or for 'mapped' the JSON mapping file")  # fmt: skip
    p.add_argument(
        "--chexmask", type=Path, required=True, help="the dataset's CheXmask OriginalResolution CSV"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for manifest.csv, masks/, study.json")
    p.add_argument("--labels", type=Path, help="label CSV (default: found in the dataset root)")
    p.add_argument("--metadata", type=Path, help="MIMIC metadata CSV (default: found in the dataset root)")
    p.add_argument("--views", default="PA", help="kept views, comma-separated (PA)")
    p.add_argument("--min-quality", type=float, default=0.7, help="lowest CheXmask Dice RCA (Mean) (0.7)")
    p.add_argument("--pathologies", default="effusion,pneumothorax,consolidation,cardiomegaly")
    p.add_argument("--sides", default="left,right")
    p.add_argument("--extents", default="0.2,0.35,0.5")
    p.add_argument("--per-cell", type=int, default=1, help="rows per pathology x side x extent cell (1)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the film draw, row order and sampler seeds (0)"
    )
    p.add_argument("--steps", type=int, help="sampler steps for every variant, PIE's three rounds included "
                   "(default: each workflow's own)")  # fmt: skip
    p.add_argument("--workflows", type=Path, default=WORKFLOWS, help="folder of the variants' API workflows")
    p.add_argument("-v", "--verbose", action="store_true")


def run_dataset_command(args: argparse.Namespace) -> int:
    summary = build_study_folder(args.layout, args.source, args.chexmask, args.out, labels=args.labels,
                                 metadata=args.metadata, views=_split(args.views), min_quality=args.min_quality,
                                 pathologies=_split(args.pathologies), sides=_split(args.sides),
                                 extents=[_float(e, "--extents") for e in _split(args.extents)],
                                 per_cell=args.per_cell, seed=args.seed, workflows=args.workflows,
                                 steps=args.steps)  # fmt: skip
    sys.stdout.write(f"{summary['rows']} rows drawn from the {summary['films_with_masks']} of {summary['healthy_films']} "
                     f"healthy films that have CheXmask masks of Dice RCA >= {args.min_quality:g}; wrote "
                     f"{args.out / 'manifest.csv'} and {args.out / 'study.json'}\n")  # fmt: skip
    return 0


def build_study_folder(layout: str, source: Path, chexmask_csv: Path, out: Path, *, labels: Path | None = None,
                       metadata: Path | None = None, views: list[str] | None = None, min_quality: float = 0.7,
                       pathologies: list[str] | None = None, sides: list[str] | None = None,
                       extents: list[float] | None = None, per_cell: int = 1, seed: int = 0,
                       workflows: Path = WORKFLOWS, steps: int | None = None) -> dict:  # fmt: skip
    """Manifest, masks, map, study and design files in ``out``; returns the design summary."""
    if steps is not None and steps < 1:
        raise RunnerError(f"--steps {steps}: expected 1 or more sampler steps")
    kept_views = tuple(views or ["PA"])
    if layout == "mimic-cxr-jpg":
        films = mimic_cxr_jpg(source, labels, metadata, kept_views)
    elif layout == "chexpert":
        films = chexpert(source, labels, kept_views)
    elif layout == "mapped":
        films = generic(source)
    else:
        raise RunnerError(f"dataset layout '{layout}': expected mimic-cxr-jpg, chexpert or mapped")
    masks = select_masks(chexmask_csv, {normalise_id(f.mask_id) for f in films}, min_quality)
    usable = [f for f in films if normalise_id(f.mask_id) in masks]
    cell_list = cells(pathologies or ["effusion", "pneumothorax", "consolidation", "cardiomegaly"],
                      sides or ["left", "right"], extents or [0.2, 0.35, 0.5], per_cell)  # fmt: skip
    rows = design_rows(usable, cell_list, seed)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with (out / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for film, cell, row_seed in rows:
            key = normalise_id(film.mask_id)
            if key not in written:
                written[key] = write_mask_row(masks[key], out / "masks")
            writer.writerow({"image": str(film.image.resolve()), "masks": written[key].relative_to(out).as_posix(),
                             "mask_id": row_id(masks[key]), "pathology": cell.pathology, "side": cell.side,
                             "extent": cell.extent, "seed": row_seed, **prompt_cells(cell, film.view),
                             "target_organs": _targets(cell.pathology, cell.side), "view": film.view,
                             "patient": film.patient})  # fmt: skip
    (out / "manifest.map.json").write_text(json.dumps(MAP, indent=1) + "\n", encoding="utf-8")
    sampler = {"Sampler.steps": steps} if steps else {}
    pie = {
        "workflow": str((workflows / "baseline_pie_progressive.json").resolve()),
        "map": {"seed": "Sampler round 1.seed"},
    }
    if steps:
        pie["set"] = {f"Sampler round {k}.steps": steps for k in (1, 2, 3)}
    study = {"manifest": "manifest.csv", "title": f"{layout}: {len(rows)} counterfactuals", "map": MAP,
             "set": {"Organ masks.source": "chexmask_csv", "Organ masks.organs": "all",
                     "Organ masks.min_quality": min_quality, **sampler},
             "variants": {**{name: str((workflows / wf).resolve()) for name, wf in VARIANTS.items()}, "PIE": pie},
             "metrics": ["ssim_outside", "ssim_inside", "psnr_outside_db", "mae_outside", "localisation"]}  # fmt: skip
    (out / "study.json").write_text(json.dumps(study, indent=1) + "\n", encoding="utf-8")
    summary = {"layout": layout, "source": str(source), "chexmask": str(chexmask_csv), "views": list(kept_views),
               "min_quality": min_quality, "seed": seed, "per_cell": per_cell, "healthy_films": len(films),
               "films_with_masks": len(usable), "rows": len(rows),
               "cells": _count(f"{c.pathology}/{c.side}/{c.extent:g}" for c in cell_list)}  # fmt: skip
    (out / "design.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _targets(pathology: str, side: str) -> str:
    if pathology == "cardiomegaly":
        return "heart"
    if side == "bilateral":
        return "left_lung, right_lung"
    return f"{side}_lung"


def _count(items: object) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:  # type: ignore[attr-defined]
        out[item] = out.get(item, 0) + 1
    return out


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _float(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError as e:
        raise RunnerError(f"{flag}: '{text}' is not a number") from e
