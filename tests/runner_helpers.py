"""Small API workflows for the headless runner's tests (titled nodes, tiny sizes)."""

from __future__ import annotations

import csv
from pathlib import Path

from helpers import core_txt2img_workflow

TITLES = {
    "1": "Checkpoint",
    "2": "Positive prompt",
    "3": "Negative prompt",
    "5": "Sampler",
    "6": "Decode",
    "7": "Save",
}


def runner_workflow(ckpt_name: str, steps: int = 1, prefix: str = "runner") -> dict:
    """The core txt2img workflow at 64x64 with titled nodes (node 4, the empty latent, keeps no title)."""
    wf = core_txt2img_workflow(ckpt_name, size=64, steps=steps, prefix=prefix)
    for nid, title in TITLES.items():
        wf[nid]["_meta"] = {"title": title}
    return wf


def image_metrics_workflow(blur: bool, prefix: str = "metrics") -> dict:
    """LoadImage -> (ImageBlur) -> CXRMetrics against the loaded image, region from LoadImageMask; no model."""
    counterfactual = ["3", 0] if blur else ["1", 0]
    wf = {
        "1": {"class_type": "LoadImage", "_meta": {"title": "Radiograph"}, "inputs": {"image": "none.png"}},
        "2": {"class_type": "LoadImageMask", "_meta": {"title": "Region"}, "inputs": {"image": "none.png", "channel": "red"}},
        "4": {"class_type": "CXRMetrics", "_meta": {"title": "Metrics"},
              "inputs": {"original": ["1", 0], "counterfactual": counterfactual, "target_region": ["2", 0],
                         "run_tag": "blur" if blur else "identity", "csv_name": ""}},
        "5": {"class_type": "SaveImage", "_meta": {"title": "Save"}, "inputs": {"images": counterfactual, "filename_prefix": prefix}},
    }  # fmt: skip
    if blur:
        wf["3"] = {"class_type": "ImageBlur", "_meta": {"title": "Blur"},
                   "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.0}}  # fmt: skip
    return wf


def empty_image_workflow(prefix: str = "empty") -> dict:
    """EmptyImage -> SaveImage: runs in milliseconds."""
    return {
        "1": {"class_type": "EmptyImage", "_meta": {"title": "Canvas"},
              "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "_meta": {"title": "Save"}, "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }  # fmt: skip


def write_manifest(path: Path, rows: list[dict[str, object]]) -> Path:
    """A manifest CSV with the usual columns first, then any others the rows have."""
    columns = ["image", "masks", "pathology", "side", "extent", "seed"]
    columns += [c for r in rows for c in r if c not in columns]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(columns)), restval="")
        w.writeheader()
        w.writerows(rows)
    return path
