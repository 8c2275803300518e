"""CheXmask rows for the chosen films, each written as a one-row CheXmask CSV beside the manifest.

The CheXmask CSV of a dataset (``cxr_core/chexmask.py`` describes its columns:
an id column, ``Dice RCA (Mean)``, ``Left Lung``, ``Right Lung``, ``Heart`` as
RLE over the row-major image with 1-based run starts, ``Height``, ``Width``)
is streamed once; the rows of the wanted ids whose quality reaches the
threshold and whose three masks are present and well-formed are kept. Each is
written, with the same header, to ``masks/<id>.csv``: a small file that the
runner uploads and ``OrganMaskLoader(source=chexmask_csv)`` reads, as it
would read the multi-GB original.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import sys
from pathlib import Path, PurePosixPath

from ..errors import RunnerError
from .layouts import open_csv

log = logging.getLogger("cxr_counterfactual.runner")
ID_COLUMNS = ("dicom_id", "Path", "Image Index", "ImageID", "image_id")
MASK_COLUMNS = ("Left Lung", "Right Lung", "Heart")
QUALITY = "Dice RCA (Mean)"


def normalise_id(value: str) -> str:
    """Ids compare on their last four path parts (CheXpert paths differ in the top folder between releases)."""
    parts = PurePosixPath(value.strip()).parts
    return "/".join(parts[-4:])


def rle_problem(rle: str, height: int, width: int) -> str:
    """'' when ``rle`` is a well-formed CheXmask RLE for a height x width image, else what is wrong."""
    try:
        runs = [int(v) for v in rle.split()]
    except ValueError:
        return "not space-separated integers"
    if not runs:
        return "empty"
    if len(runs) % 2:
        return f"{len(runs)} values, expected start/length pairs"
    n, last = height * width, 0
    for start, length in zip(runs[0::2], runs[1::2], strict=True):
        if start < 1 or length < 1 or start <= last or start + length - 1 > n:
            return f"run ({start}, {length}) outside 1..{n} or out of order"
        last = start + length - 1
    return ""


def select_masks(chexmask_csv: Path, wanted: set[str], min_quality: float) -> dict[str, dict[str, str]]:
    """{normalised id: CheXmask row} for the wanted ids with usable masks; counts of refusals are logged."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # RLE cells are long
    rows = open_csv(chexmask_csv)
    found: dict[str, dict[str, str]] = {}
    refused = {"quality": 0, "size": 0, "rle": 0}
    id_column = None
    for row in rows:
        if id_column is None:
            id_column = next((c for c in ID_COLUMNS if c in row), None)
            missing = [c for c in (*MASK_COLUMNS, QUALITY, "Height", "Width") if c not in row]
            if id_column is None or missing:
                raise RunnerError(f"{chexmask_csv} is not a CheXmask OriginalResolution CSV: expected an id column "
                                  f"({', '.join(ID_COLUMNS)}) and {', '.join((*MASK_COLUMNS, QUALITY, 'Height', 'Width'))}; "
                                  f"missing {missing or 'the id column'}")  # fmt: skip
        key = normalise_id(row[id_column])
        if key not in wanted or key in found:
            continue
        try:
            quality, height, width = float(row[QUALITY]), int(float(row["Height"])), int(float(row["Width"]))
        except ValueError:
            refused["size"] += 1
            continue
        if quality < min_quality:
            refused["quality"] += 1
            continue
        problems = [f"{c}: {p}" for c in MASK_COLUMNS if (p := rle_problem(row[c], height, width))]
        if problems:
            refused["rle"] += 1
            log.warning("CheXmask %s: %s; film left out", row[id_column], "; ".join(problems))
            continue
        found[key] = row
    log.info("CheXmask %s: %d of %d films have masks (left out: %d below Dice RCA %.2f, %d without a size, "
             "%d with a broken RLE)", chexmask_csv.name, len(found), len(wanted), refused["quality"], min_quality,
             refused["size"], refused["rle"])  # fmt: skip
    return found


def row_id(row: dict[str, str]) -> str:
    """The id cell of a CheXmask row, as written (the loader's ``image_id``)."""
    return next(row[c] for c in ID_COLUMNS if c in row)


def write_mask_row(row: dict[str, str], folder: Path) -> Path:
    """The row, with its header, as ``folder/<readable id>-<hash>.csv``."""
    id_value = row_id(row)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in PurePosixPath(id_value).stem)[:60]
    path = folder / f"{stem}-{hashlib.sha256(id_value.encode()).hexdigest()[:8]}.csv"
    folder.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    return path
