"""The demo radiograph and its committed masks, through the three input nodes; the nodes on the real server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cxr_pack.cxr_core import demo_assets
from cxr_pack.cxr_core.priors import thorax_mask
from cxr_pack.nodes.organ_mask_loader import OrganMaskLoader
from cxr_pack.nodes.radiograph_loader import CXRImageLoader
from cxr_pack.nodes.spatial_prior import PathologySpatialPrior
from helpers import comfy_folders

REPO = Path(__file__).resolve().parents[1]
INPUT_NODES = ("CXRImageLoader", "OrganMaskLoader", "PathologySpatialPrior")


@pytest.fixture
def input_dir(tmp_path: Path):
    folder = tmp_path / "input"
    with comfy_folders(input=folder):
        yield folder


def test_demo_files_are_found() -> None:
    path = demo_assets.demo_radiograph_path()
    assert path.name == "RG1_UNCR.dcm" and path.stat().st_size > 7_000_000
    assert demo_assets.demo_label_map_path().is_file() and demo_assets.demo_legend_path().is_file()


def test_demo_masks_are_plausible_at_original_size() -> None:
    om = demo_assets.load_demo_organ_masks()
    assert om.names == ("right_lung", "left_lung", "heart", "mediastinum")
    assert om.image_size == demo_assets.DEMO_SIZE
    assert float(om.masks.sum(dim=1).max()) == 1.0  # one label per pixel: no overlaps
    area = {n: float(om.get(n).mean()) for n in om.names}
    assert (
        0.10 < area["right_lung"] < 0.30 and 0.10 < area["left_lung"] < 0.30 and 0.04 < area["heart"] < 0.15
    )

    def cx(n: str) -> float:
        return float(torch.nonzero(om.get(n)[0], as_tuple=True)[1].float().mean())

    assert cx("right_lung") < cx("mediastinum") < cx("left_lung")  # PA: patient's right on the image's left
    assert cx("right_lung") < cx("heart") < cx("left_lung")
    assert cx("heart") > cx("mediastinum")  # the heart bulges to the patient's left


def test_demo_masks_are_what_the_script_makes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_masks.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    made = cv2.imread(str(tmp_path / "RG1_UNCR_labels.png"), cv2.IMREAD_UNCHANGED)
    committed = cv2.imread(str(demo_assets.DEMO_LABEL_MAP), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(made, committed), "assets/demo is stale: rerun scripts/make_demo_masks.py"
    assert (tmp_path / "RG1_UNCR_labels.json").read_text() == demo_assets.DEMO_LEGEND.read_text()


def test_demo_through_the_three_nodes(input_dir: Path) -> None:
    shutil.copy(demo_assets.demo_radiograph_path(), input_dir)
    shutil.copy(demo_assets.DEMO_LABEL_MAP, input_dir)
    shutil.copy(demo_assets.DEMO_LEGEND, input_dir)  # the sidecar legend is found by name
    image, geometry, _ = CXRImageLoader.execute("RG1_UNCR.dcm").result
    om, union, preview, info = OrganMaskLoader.execute(
        "label_map", "RG1_UNCR_labels.png", geometry=geometry, image=image
    ).result
    assert om.image_size == (512, 512) and preview.shape == image.shape
    assert torch.equal(om.masks, demo_assets.load_demo_organ_masks(geometry).masks)
    # the lungs are dark on the radiograph, the heart and mediastinum bright: the masks sit on the anatomy
    grey = image[0, ..., 0]
    lungs = grey[om.union(["right_lung", "left_lung"])[0] > 0.5].mean()
    centre = grey[om.union(["heart", "mediastinum"])[0] > 0.5].mean()
    assert float(centre) > float(lungs) + 0.1
    thorax = thorax_mask(om)
    for pathology, side in (("effusion", "left"), ("pneumothorax", "right"), ("cardiomegaly", "right")):
        prior, pv = PathologySpatialPrior.execute(om, pathology, side, 0.5, 8.0, image=image).result
        assert prior.shape == (1, 512, 512) and pv.shape == (1, 512, 512, 3)
        assert float((prior * (1 - thorax)).max()) == 0.0 and float(prior.max()) > 0.9
    prior = PathologySpatialPrior.execute(om, "effusion", "left", 0.5, 0.0).result[0][0]
    xs = torch.nonzero(prior > 0.5, as_tuple=True)[1].float()
    assert float(xs.mean()) > 256  # the patient's left is on the image's right


@pytest.mark.server
def test_input_nodes_are_on_the_server(comfy_client) -> None:
    info = comfy_client.object_info()
    missing = [n for n in INPUT_NODES if n not in info]
    assert not missing, f"input nodes missing from /object_info: {missing}"
    for n in INPUT_NODES:
        assert info[n]["category"] == "CXR Counterfactual/inputs"
    assert info["CXRImageLoader"]["output"] == ["IMAGE", "CXR_GEOMETRY", "MASK"]
    assert info["OrganMaskLoader"]["output"] == ["ORGAN_MASKS", "MASK", "IMAGE", "STRING"]
    assert info["PathologySpatialPrior"]["output"] == ["MASK", "IMAGE"]
    req = info["OrganMaskLoader"]["input"]["required"]
    assert req["source"][1]["options"] == [
        "label_map",
        "mask_folder",
        "npz",
        "chexmask_csv",
        "torchxrayvision",
    ]
    assert "tooltip" in req["path"][1]
    opt = info["OrganMaskLoader"]["input"]["optional"]
    assert opt["geometry"][0] == "CXR_GEOMETRY"
    image_input = info["CXRImageLoader"]["input"]["required"]["image"]
    # no core image-upload widget (it drops DICOM and fetches it for a preview); js/cxr_radiograph.js uploads
    assert "image_upload" not in image_input[1]
