"""The demo input: a real PA chest radiograph and the committed organ masks made for it.

- ``RG1_UNCR.dcm`` (CR, chest PA, 1955 x 1841, MONOCHROME1) ships in the PyPI
  package ``pydicom-data`` (module ``data_store``); it is found on disk, never
  downloaded.
- ``assets/demo/RG1_UNCR_labels.png`` is its label map at the radiograph's
  original resolution (1955 x 1841, one uint8 label per pixel), with the legend
  ``RG1_UNCR_labels.json``; ``scripts/make_demo_masks.py`` made both by
  classical image processing (read that script for the method and its limits).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from .geometry import ImageGeometry
from .label_schemes import read_legend
from .mask_sources import decode_label_map, read_image_array
from .organ_mask_loading import finish_masks
from .organ_masks import OrganMasks

log = logging.getLogger("cxr_counterfactual.demo_assets")

DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"
DEMO_RADIOGRAPH_NAME = "RG1_UNCR.dcm"
DEMO_LABEL_MAP = DEMO_DIR / "RG1_UNCR_labels.png"
DEMO_LEGEND = DEMO_DIR / "RG1_UNCR_labels.json"
DEMO_SIZE = (1955, 1841)  # (H, W) of the radiograph and of the label map


class DemoAssetError(ValueError):
    """A demo file is missing, with how to get it."""


def demo_radiograph_path() -> Path:
    """Path of RG1_UNCR.dcm: $CXR_DEMO_RADIOGRAPH if set (an offline copy), else inside pydicom-data."""
    override = os.environ.get("CXR_DEMO_RADIOGRAPH", "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise DemoAssetError(
                f"CXR_DEMO_RADIOGRAPH={override}: no such file; unset it to use pydicom-data's copy"
            )
        return path
    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        raise DemoAssetError(
            "the demo radiograph RG1_UNCR.dcm comes from the PyPI package pydicom-data, which is not installed; "
            "run `python -m pip install pydicom-data==1.0.0` (or `bash scripts/setup_host.sh`)"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / DEMO_RADIOGRAPH_NAME
        if path.is_file():
            return path
    raise DemoAssetError(
        f"pydicom-data is installed but has no data/{DEMO_RADIOGRAPH_NAME}; reinstall pydicom-data==1.0.0"
    )


def demo_label_map_path() -> Path:
    return _committed(DEMO_LABEL_MAP)


def demo_legend_path() -> Path:
    return _committed(DEMO_LEGEND)


def load_demo_organ_masks(
    geometry: ImageGeometry | None = None, organs: list[str] | None = None
) -> OrganMasks:
    """The committed demo masks as ORGAN_MASKS, at the original size or through ``geometry``."""
    legend = read_legend(demo_legend_path())
    raw = decode_label_map(
        read_image_array(demo_label_map_path(), "demo label map"),
        legend,
        scheme="demo",
        what="demo label map",
    )
    return finish_masks(raw, organs, geometry, None, "binary", 0.5, what="demo masks")


def _committed(path: Path) -> Path:
    if not path.is_file():
        raise DemoAssetError(
            f"{path.name} is missing from {path.parent}; regenerate it with scripts/make_demo_masks.py"
        )
    return path
