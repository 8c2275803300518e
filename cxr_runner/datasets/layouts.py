"""Healthy source films of a dataset in its published layout: MIMIC-CXR-JPG, CheXpert, or a documented mapping.

Each reader returns ``Source`` records of frontal films whose report labels
say "No Finding" (1) and no other finding positive or uncertain, with the id
by which CheXmask names the film.

- MIMIC-CXR-JPG (PhysioNet, v2.0/2.1): ``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg``
  under the root; labels per study in ``mimic-cxr-2.0.0-chexpert.csv(.gz)``
  (``subject_id, study_id`` and the 14 CheXpert labels, 1.0 / 0.0 / -1.0 /
  empty); the view per image in ``mimic-cxr-2.0.0-metadata.csv(.gz)``
  (``dicom_id, subject_id, study_id, ViewPosition``, ...). CheXmask id: ``dicom_id``.
- CheXpert (v1.0 and v1.0-small; for CheXpert Plus, whose label file differs, use a mapping):
  ``train.csv``/``valid.csv`` with ``Path`` (``CheXpert-v1.0-small/train/
  patient00001/study1/view1_frontal.jpg``), ``Sex, Age, Frontal/Lateral, AP/PA``
  and the 14 labels. CheXmask id: ``Path``, matched on its last four parts.
- Any other dataset (NIH ChestX-ray14, VinDr-CXR, PadChest): a JSON mapping,
  see ``GenericLayout`` and the README section "Reproducing the paper's comparison".
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import RunnerError

FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
            "Lung Lesion", "Lung Opacity", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax",
            "Support Devices")  # fmt: skip
NO_FINDING = "No Finding"


@dataclass(frozen=True)
class Source:
    image: Path  # the film on disk
    mask_id: str  # the film's id in the dataset's CheXmask CSV
    patient: str
    view: str  # PA, AP, ...


def open_csv(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a CSV or CSV.GZ file; errors name the file and what was expected."""
    if not path.is_file():
        raise RunnerError(
            f"{path} does not exist; expected the dataset's label/metadata CSV (or give its path)"
        )
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")
    with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:
        yield from csv.DictReader(fh)


def find_file(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise RunnerError(
        f"no {what} in {root}: expected one of {', '.join(names)} (or give --labels/--metadata)"
    )


def is_healthy(
    row: dict[str, str], no_finding: str = NO_FINDING, findings: tuple[str, ...] = FINDINGS
) -> bool:
    """ "No Finding" is 1 and no finding (support devices included) is positive (1) or uncertain (-1).

    Empty cells count as not mentioned, as in the CheXpert labeller's output.
    """
    if _label(row.get(no_finding)) != 1.0:
        return False
    return all(_label(row.get(f)) not in (1.0, -1.0) for f in findings)


def mimic_cxr_jpg(root: Path, labels: Path | None = None, metadata: Path | None = None,
                  views: tuple[str, ...] = ("PA",)) -> list[Source]:  # fmt: skip
    """Healthy frontal films of MIMIC-CXR-JPG under ``root`` (the folder holding ``files/``)."""
    labels = labels or find_file(
        root, ("mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-chexpert.csv"), "label CSV"
    )
    metadata = metadata or find_file(root, ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv"),
                                     "metadata CSV")  # fmt: skip
    healthy = {(r["subject_id"], r["study_id"]) for r in open_csv(labels) if is_healthy(r)}
    out = []
    for r in open_csv(metadata):
        subject, study, view = r.get("subject_id", ""), r.get("study_id", ""), r.get("ViewPosition", "")
        if (subject, study) not in healthy or view not in views:
            continue
        image = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{r['dicom_id']}.jpg"
        if image.is_file():
            out.append(Source(image, r["dicom_id"], subject, view))
    return out


def chexpert(root: Path, labels: Path | None = None, views: tuple[str, ...] = ("PA",)) -> list[Source]:
    """Healthy frontal films of CheXpert; ``root`` holds ``train.csv`` (or give ``labels``)."""
    labels = labels or find_file(root, ("train.csv", "valid.csv"), "label CSV")
    out = []
    for r in open_csv(labels):
        if r.get("Frontal/Lateral") != "Frontal" or r.get("AP/PA") not in views or not is_healthy(r):
            continue
        image = _resolve(root, labels.parent, r["Path"])
        if image is not None:
            out.append(Source(image, r["Path"], PurePosixPath(r["Path"]).parts[-3], r["AP/PA"]))
    return out


@dataclass
class GenericLayout:
    """A label CSV of any dataset, described by a JSON mapping (keys are the field names below).

    ``healthy_value`` is compared with the ``healthy_column`` cell as text
    (e.g. "No Finding" in NIH's ``Finding Labels``, "1" or "1.0" in a label column).
    A film listed on several lines (VinDr-CXR: one per radiologist) is used once,
    and only if every line says healthy.
    """

    labels: str  # CSV path, relative to the mapping file
    image_column: str  # cell: image path relative to image_root
    healthy_column: str
    healthy_value: str
    image_root: str = "."
    id_column: str = ""  # the CheXmask id (default: the image cell's file name)
    patient_column: str = ""
    view_column: str = ""
    views: list[str] = field(default_factory=list)  # kept views (empty: all)
    image_suffix: str = ""  # appended to the image cell (VinDr-CXR names files by id: ".dicom")


def generic(mapping_file: Path) -> list[Source]:
    try:
        spec = GenericLayout(**json.loads(mapping_file.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as e:
        raise RunnerError(f"dataset mapping {mapping_file}: {e}; expected a JSON object with labels, image_column, "
                          "healthy_column, healthy_value (and optionally image_root, id_column, patient_column, "
                          "view_column, views)") from e  # fmt: skip
    base = mapping_file.parent
    films: dict[Path, tuple[Source, bool]] = {}  # film -> (source, every line so far says healthy)
    for r in open_csv(base / spec.labels):
        view = r.get(spec.view_column, "") if spec.view_column else ""
        if spec.views and view not in spec.views:
            continue
        image = base / spec.image_root / (r[spec.image_column] + spec.image_suffix)
        healthy = r.get(spec.healthy_column, "").strip() == spec.healthy_value
        if image in films:  # a film on several lines (VinDr-CXR: one per radiologist) must be healthy on all
            films[image] = (films[image][0], films[image][1] and healthy)
        elif image.is_file():
            mask_id = r[spec.id_column] if spec.id_column else PurePosixPath(r[spec.image_column]).name
            patient = r.get(spec.patient_column, "") if spec.patient_column else ""
            films[image] = (Source(image, mask_id, patient, view), healthy)
    return [source for source, healthy in films.values() if healthy]


def _resolve(root: Path, csv_dir: Path, cell: str) -> Path | None:
    """A CheXpert ``Path`` cell names its own top folder (CheXpert-v1.0-small/...); try it and without it."""
    parts = PurePosixPath(cell).parts
    for base in (root, root.parent, csv_dir, csv_dir.parent):
        for candidate in (base.joinpath(*parts), base.joinpath(*parts[1:])):
            if candidate.is_file():
                return candidate
    return None


def _label(cell: str | None) -> float | None:
    try:
        return float(cell) if cell not in (None, "") else None
    except ValueError:
        return None
