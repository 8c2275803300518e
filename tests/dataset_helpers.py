"""Tiny synthetic datasets in the published MIMIC-CXR-JPG, CheXpert and NIH layouts, with CheXmask CSVs.

No real data: each film is a grey square with two dark lung fields and a
heart drawn from the same ellipses as its CheXmask masks (the patient's left
lung on the image's right, as on a PA film). Masks are written as CheXmask
RLE: "start length" pairs over the row-major flattened image, starts 1-based.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
          "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
          "Pneumothorax", "Support Devices")  # fmt: skip
CHEXMASK_COLUMNS = (
    "Dice RCA (Max)",
    "Dice RCA (Mean)",
    "Landmarks",
    "Left Lung",
    "Right Lung",
    "Heart",
    "Height",
    "Width",
)
H, W = 96, 80


def organ_masks(shift: int = 0) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:H, 0:W]

    def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0

    return {"Right Lung": ellipse(44, 22 + shift, 30, 13), "Left Lung": ellipse(44, 58 + shift, 30, 13),
            "Heart": ellipse(64, 42 + shift, 14, 12) & ~ellipse(44, 22 + shift, 30, 13)}  # fmt: skip


def film(masks: dict[str, np.ndarray], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = np.full((H, W), 170.0) + rng.normal(0, 6, (H, W))
    img[masks["Right Lung"] | masks["Left Lung"]] -= 110
    img[masks["Heart"]] += 40
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def encode_rle(mask: np.ndarray) -> str:
    flat = np.concatenate([[0], mask.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends, strict=True))


def chexmask_row(id_column: str, image_id: str, quality: float = 0.85, shift: int = 0) -> dict[str, str]:
    masks = organ_masks(shift)
    row = {id_column: image_id, "Dice RCA (Max)": f"{min(quality + 0.05, 1):.3f}", "Dice RCA (Mean)": f"{quality:.3f}",
           "Landmarks": "[[1, 2], [3, 4]]", "Height": str(H), "Width": str(W)}  # fmt: skip
    row.update({name: encode_rle(masks[name]) for name in ("Left Lung", "Right Lung", "Heart")})
    return row


def write_csv(path: Path, columns: list[str], rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    data = text.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def labels(no_finding: bool = True, **findings: float) -> dict[str, object]:
    row: dict[str, object] = {"No Finding": 1.0 if no_finding else ""}
    row.update({k.replace("_", " "): v for k, v in findings.items()})
    return row


# film kinds: healthy PA (used), and each reason to leave a film out
KINDS = ("healthy", "healthy", "healthy", "healthy", "effusion", "uncertain", "devices", "lateral", "ap", "low_quality",
         "no_mask")  # fmt: skip


def _kind_labels(kind: str) -> dict[str, object]:
    if kind == "effusion":
        return labels(False, Pleural_Effusion=1.0)
    if kind == "uncertain":
        return labels(True, Edema=-1.0)
    if kind == "devices":
        return labels(True, Support_Devices=1.0)
    return labels()


def make_mimic(root: Path, patients: int = 3) -> tuple[Path, Path]:
    """A MIMIC-CXR-JPG tree (files/pXX/pSUBJECT/sSTUDY/DICOM.jpg + the two label CSVs) and its CheXmask CSV."""
    label_rows, meta_rows, mask_rows = [], [], []
    for p in range(patients):
        subject = f"1{p:07d}"
        for k, kind in enumerate(KINDS):
            study, dicom = f"5{p:03d}{k:04d}", f"{p:02d}{k:02d}aaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee"
            folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            folder.mkdir(parents=True, exist_ok=True)
            film(organ_masks(p % 3), seed=p * 100 + k).save(folder / f"{dicom}.jpg", quality=95)
            label_rows.append({"subject_id": subject, "study_id": study, **_kind_labels(kind)})
            view = {"lateral": "LATERAL", "ap": "AP"}.get(kind, "PA")
            meta_rows.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": view,
                              "Rows": H, "Columns": W})  # fmt: skip
            if kind != "no_mask":
                mask_rows.append(
                    chexmask_row("dicom_id", dicom, 0.5 if kind == "low_quality" else 0.85, p % 3)
                )
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *LABELS], label_rows)
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows",
                                                         "Columns"], meta_rows)  # fmt: skip
    chexmask = write_csv(
        root.parent / "chexmask" / "MIMIC-CXR-JPG.csv", ["dicom_id", *CHEXMASK_COLUMNS], mask_rows
    )
    return root, chexmask


def make_chexpert(root: Path, patients: int = 3) -> tuple[Path, Path]:
    """CheXpert-v1.0-small/ with train.csv and train/patientN/studyM/view1_frontal.jpg, and its CheXmask CSV.

    The CheXmask CSV names films by the full-resolution release's top folder (CheXpert-v1.0/...), as
    the two releases differ only there.
    """
    top = root / "CheXpert-v1.0-small"
    rows, mask_rows = [], []
    for p in range(patients):
        for k, kind in enumerate(KINDS):
            view_file = "view2_lateral.jpg" if kind == "lateral" else "view1_frontal.jpg"
            rel = f"train/patient{p + 1:05d}/study{k + 1}/{view_file}"
            (top / rel).parent.mkdir(parents=True, exist_ok=True)
            film(organ_masks(p % 3), seed=p * 100 + k).save(top / rel, quality=95)
            rows.append({"Path": f"CheXpert-v1.0-small/{rel}", "Sex": "Female", "Age": 60 + k,
                         "Frontal/Lateral": "Lateral" if kind == "lateral" else "Frontal",
                         "AP/PA": "" if kind == "lateral" else ("AP" if kind == "ap" else "PA"), **_kind_labels(kind)})  # fmt: skip
            if kind != "no_mask":
                quality = 0.5 if kind == "low_quality" else 0.85
                mask_rows.append(chexmask_row("Path", f"CheXpert-v1.0/{rel}", quality, p % 3))
    write_csv(top / "train.csv", ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABELS], rows)
    chexmask = write_csv(root / "chexmask" / "CheXpert.csv", ["Path", *CHEXMASK_COLUMNS], mask_rows)
    return top, chexmask


def make_nih(root: Path, n: int = 6) -> tuple[Path, Path]:
    """ChestX-ray14's Data_Entry_2017.csv + images/, its CheXmask CSV and a dataset mapping file."""
    rows, mask_rows = [], []
    for i in range(n):
        name = f"0000{i:04d}_000.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        film(organ_masks(i % 3), seed=i).save(root / "images" / name)
        finding = "No Finding" if i % 3 else "Effusion|Atelectasis"
        rows.append(
            {"Image Index": name, "Finding Labels": finding, "Patient ID": str(i), "View Position": "PA"}
        )
        mask_rows.append(chexmask_row("Image Index", name))
    write_csv(
        root / "Data_Entry_2017.csv", ["Image Index", "Finding Labels", "Patient ID", "View Position"], rows
    )
    mapping = root / "nih.json"
    mapping.write_text('{"labels": "Data_Entry_2017.csv", "image_root": "images", "image_column": "Image Index", '
                       '"id_column": "Image Index", "healthy_column": "Finding Labels", "healthy_value": "No Finding", '
                       '"patient_column": "Patient ID", "view_column": "View Position", "views": ["PA"]}')  # fmt: skip
    return mapping, write_csv(
        root / "chexmask" / "ChestX-Ray8.csv", ["Image Index", *CHEXMASK_COLUMNS], mask_rows
    )
