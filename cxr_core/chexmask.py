"""CheXmask: run-length-encoded lung and heart masks, one CSV row per image.

CheXmask (Gaggion et al., PhysioNet) publishes, per dataset, a CSV with an
image-id column (``dicom_id`` for MIMIC-CXR-JPG, ``Path`` for CheXpert,
``Image Index``/``ImageID``/``image_id`` elsewhere), ``Dice RCA (Mean)`` and
``Dice RCA (Max)`` (reverse-classification-accuracy quality estimates),
``Landmarks``, and the masks ``Left Lung``, ``Right Lung``, ``Heart`` as RLE
strings over the row-major (C-order) flattened image of ``Height`` x
``Width``: space-separated "start length" pairs with 1-based starts. The
"OriginalResolution" CSVs match the images pixel for pixel; the
"Preprocessed" CSVs (no Height/Width, 1024 x 1024 after padding) do not, and
the geometry check refuses them for non-square images.

The CSVs are large (GBs), so the file is streamed until the id is found.
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path, PurePosixPath

import numpy as np

from .image_limits import check_pixel_count
from .label_schemes import canonical_class_name
from .mask_sources import MaskSourceError, RawMasks

log = logging.getLogger("cxr_counterfactual.chexmask")

ID_COLUMNS: tuple[str, ...] = ("dicom_id", "ImageID", "Image ID", "Image Index", "image_id", "Path", "id")
MASK_COLUMNS: tuple[str, ...] = ("Left Lung", "Right Lung", "Heart")
QUALITY_COLUMN = "Dice RCA (Mean)"
PREPROCESSED_SIZE = 1024


class ChexmaskError(MaskSourceError):
    """A CheXmask CSV or row that cannot be used."""


def decode_rle(rle: str, height: int, width: int, what: str = "RLE") -> np.ndarray:
    """CheXmask RLE ("start length ...", 1-based starts, row-major) -> (height, width) bool mask."""
    text = (rle or "").strip()
    n = height * width
    if not text or text.lower() == "nan":
        return np.zeros((height, width), dtype=bool)
    try:
        runs = np.array(text.split(), dtype=np.int64)
    except ValueError as exc:
        raise ChexmaskError(
            f"{what}: RLE must be space-separated integers, received '{text[:40]}...'"
        ) from exc
    if runs.size % 2:
        raise ChexmaskError(
            f"{what}: RLE has an odd number of values ({runs.size}); expected start/length pairs"
        )
    starts, lengths = runs[0::2] - 1, runs[1::2]
    if (starts < 0).any() or (lengths < 0).any() or (starts + lengths > n).any():
        raise ChexmaskError(
            f"{what}: RLE runs fall outside a {height}x{width} image (last end {int((starts + lengths).max())} > "
            f"{n}); Height/Width do not belong to these masks"
        )
    edges = np.zeros(n + 1, dtype=np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + lengths, -1)
    return (np.cumsum(edges[:n]) > 0).reshape(height, width)


def encode_rle(mask: np.ndarray) -> str:
    """(H, W) bool mask -> CheXmask RLE (used by tests and to export masks)."""
    flat = np.concatenate([[0], np.asarray(mask, dtype=np.int8).reshape(-1), [0]])
    runs = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs[1::2] -= runs[0::2]
    return " ".join(str(int(x)) for x in runs)


def _id_matches(cell: str, image_id: str) -> bool:
    if cell == image_id:
        return True
    a, b = PurePosixPath(cell.replace("\\", "/")), PurePosixPath(image_id.replace("\\", "/"))
    return a.name == b.name or a.stem == b.stem or cell.endswith("/" + image_id)


def find_row(csv_path: Path, image_id: str, *, what: str = "chexmask csv") -> dict[str, str]:
    """The CSV row whose id column equals ``image_id`` (or its file name / stem)."""
    key = image_id.strip()
    if not key:
        raise ChexmaskError(
            f"{what}: image_id is empty; give the image's id (e.g. MIMIC dicom_id) to look up"
        )
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            id_col = next((c for c in ID_COLUMNS if c in header), header[0] if header else None)
            missing = [c for c in MASK_COLUMNS if c not in header]
            if id_col is None or missing:
                raise ChexmaskError(
                    f"{what}: '{csv_path.name}' is not a CheXmask CSV: missing column(s) {missing or ['<id>']}; "
                    f"columns are {header[:12]}"
                )
            for row in reader:
                if _id_matches(row.get(id_col) or "", key):
                    return row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ChexmaskError(f"{what}: cannot read '{csv_path.name}' ({exc})") from exc
    raise ChexmaskError(
        f"{what}: image id '{key}' not found in column '{id_col}' of '{csv_path.name}'; check the id (MIMIC "
        "uses dicom_id, CheXpert the relative Path) and that this CSV covers the image's dataset"
    )


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def read_chexmask(
    csv_path: Path, image_id: str, min_quality: float, *, what: str = "chexmask csv"
) -> RawMasks:
    """Decode the row of ``image_id``; refuse it if its Dice RCA (Mean) is below ``min_quality``."""
    row = find_row(csv_path, image_id, what=what)
    quality = _float(row.get(QUALITY_COLUMN))
    quality_max = _float(row.get("Dice RCA (Max)"))
    if quality is not None and quality < min_quality:
        raise ChexmaskError(
            f"{what}: '{image_id}' has CheXmask quality Dice RCA (Mean) = {quality:.3f}, below min_quality "
            f"{min_quality:.3f} (the paper keeps >= 0.7); pick another image or lower min_quality knowingly"
        )
    if quality is None:
        log.warning("%s: row '%s' has no '%s' column; quality unknown", what, image_id, QUALITY_COLUMN)
    h, w = _float(row.get("Height")), _float(row.get("Width"))
    if h is None or w is None:
        h = w = PREPROCESSED_SIZE
        log.warning("%s: no Height/Width; assuming CheXmask 'Preprocessed' 1024x1024 masks", what)
    h, w = int(h), int(w)
    if h <= 0 or w <= 0:
        raise ChexmaskError(
            f"{what}: row '{image_id}' gives Height x Width {h} x {w}; expected positive sizes"
        )
    check_pixel_count(h, w, f"{what} row '{image_id}' (Height x Width)")
    names, masks, absent = [], [], []
    for col in MASK_COLUMNS:
        m = decode_rle(row.get(col) or "", h, w, what=f"{what} '{image_id}' {col}")
        name = canonical_class_name(col)
        if m.any():
            names.append(name)
            masks.append(m.astype(np.float32))
        else:
            absent.append(name)
    if not masks:
        raise ChexmaskError(
            f"{what}: '{image_id}' has no lung or heart mask in the CSV (all RLE cells empty)"
        )
    meta = {
        "source": csv_path.name,
        "image_id": image_id,
        "dice_rca_mean": quality,
        "dice_rca_max": quality_max,
    }
    return RawMasks(tuple(names), np.stack(masks)[None], "chexmask", tuple(absent), meta)
