"""Model folders of the pack's nodes: weight files the user put on disk, listed for combo inputs.

``models/inception`` (Inception-v3 for FID), ``models/cxr_classifiers``
(torchxrayvision classifier for validity) and ``models/cxr_segmentation``
(torchxrayvision segmentation models of OrganMaskLoader) are registered with
ComfyUI's ``folder_paths`` on first use, so ``extra_model_paths.yaml`` entries
with the same keys are searched too. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..cxr_core.input_paths import shown_path

INCEPTION = "inception"
CLASSIFIERS = "cxr_classifiers"
SEGMENTATION = "cxr_segmentation"
WEIGHT_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin")


def _ensure_folder(kind: str) -> None:
    folder_paths.add_model_folder_path(kind, os.path.join(folder_paths.models_dir, kind))


def model_folders(kind: str) -> list[Path]:
    """Every folder of the kind: models/<kind> and its extra_model_paths.yaml entries."""
    _ensure_folder(kind)
    return [Path(f) for f in folder_paths.get_folder_paths(kind)]


def weight_files(kind: str) -> list[str]:
    """Weight files in the kind's folders (relative names, as ComfyUI lists models)."""
    _ensure_folder(kind)
    return [f for f in folder_paths.get_filename_list(kind) if f.lower().endswith(WEIGHT_EXTENSIONS)]


def weight_path(kind: str, name: str, input_name: str) -> str:
    """Full path of a listed weight file; a clear error when it is not there."""
    _ensure_folder(kind)
    path = folder_paths.get_full_path(kind, name) if name else None
    if path is None:
        folders = folder_paths.get_folder_paths(kind)
        raise ValueError(
            f"{input_name}: expected a weight file in {[shown_path(f) for f in folders]} (models/{kind}, or '{kind}:' in "
            f"extra_model_paths.yaml), received {name!r}, which is not there"
        )
    return path
