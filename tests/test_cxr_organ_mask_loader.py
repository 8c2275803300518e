"""OrganMaskLoader end to end (node execute): every source, geometry alignment, outputs and bad input."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cxr_input_helpers import label_map, synthetic_chest
from cxr_pack.cxr_core.chexmask import encode_rle
from cxr_pack.cxr_core.geometry import GeometryError, ImageGeometry
from cxr_pack.cxr_core.input_paths import InputPathError
from cxr_pack.cxr_core.label_schemes import LegendError
from cxr_pack.cxr_core.mask_sources import MaskSourceError
from cxr_pack.cxr_core.organ_masks import OrganMaskError, OrganMasks
from cxr_pack.cxr_core.segmentation_models import SegmentationModelError
from cxr_pack.nodes.organ_mask_loader import OrganMaskLoader
from helpers import comfy_folders

H, W = 240, 200  # original size of the synthetic radiograph


@pytest.fixture
def input_dir(tmp_path: Path):
    folder = tmp_path / "input"
    with comfy_folders(input=folder):
        yield folder


def _geometry() -> ImageGeometry:
    return ImageGeometry.fit((H, W), 128, "letterbox")  # 128 x 107 content, 10/11 px side padding


def _run(**kw) -> tuple:
    return OrganMaskLoader.execute(**kw).result


def _write_label_png(folder: Path, name: str = "labels.png") -> dict[str, np.ndarray]:
    organs = synthetic_chest(H, W)
    cv2.imwrite(str(folder / name), label_map(organs, {"right_lung": 1, "left_lung": 2, "heart": 3}))
    return organs


def _aligned(organ: np.ndarray, geo: ImageGeometry) -> torch.Tensor:
    return geo.apply(torch.from_numpy(organ.astype(np.float32))) >= 0.5


def test_label_map_with_sidecar_legend_and_geometry(input_dir: Path) -> None:
    organs = _write_label_png(input_dir)
    (input_dir / "labels.json").write_text(json.dumps({"1": "right lung", "2": "left lung", "3": "heart"}))
    geo = _geometry()
    image = torch.rand(1, 128, 128, 3)
    om, union, preview, info = _run(source="label_map", path="labels.png", geometry=geo, image=image)
    assert isinstance(om, OrganMasks) and om.names == ("right_lung", "left_lung", "heart")
    assert om.image_size == (128, 128) and om.masks.shape == (1, 3, 128, 128)
    assert set(om.masks.unique().tolist()) <= {0.0, 1.0}  # binary mode
    for n in om.names:
        assert torch.equal(om.get(n)[0] >= 0.5, _aligned(organs[n], geo)), n
    assert float(om.masks[..., : geo.pad[2]].max()) == 0.0  # nothing in the padding
    assert torch.equal(union, om.masks.amax(dim=1))
    assert preview.shape == (1, 128, 128, 3) and float(preview.min()) >= 0 and float(preview.max()) <= 1
    assert "right_lung" in info and "geometry: 240x200" in info


def test_label_map_builtin_legend_selection_and_soft_mode(input_dir: Path) -> None:
    _write_label_png(input_dir)  # 1 = right lung, 2 = left lung: the CheXmask scheme says the opposite
    om = _run(
        source="label_map", path="labels.png", legend="chexmask", organs="heart, L lung", geometry=_geometry()
    )[0]
    assert om.names == ("heart", "left_lung") and om.scheme == "chexmask"
    soft = _run(
        source="label_map", path="labels.png", legend="chexmask", mask_mode="soft", geometry=_geometry()
    )[0]
    vals = soft.masks.unique()
    assert ((vals > 0) & (vals < 1)).any()  # resampled edges stay soft


def test_laterality_warning_when_left_and_right_are_swapped(input_dir: Path, caplog) -> None:
    _write_label_png(input_dir)
    with caplog.at_level(logging.WARNING, logger="cxr_counterfactual"):
        _run(
            source="label_map", path="labels.png", legend="chexmask", geometry=_geometry()
        )  # swapped on purpose
    assert any("patient's RIGHT lung lies on the image's right" in r.getMessage() for r in caplog.records)


def test_mask_folder_source(input_dir: Path) -> None:
    organs = synthetic_chest(H, W)
    folder = input_dir / "case1"
    folder.mkdir()
    for fname, organ in (
        ("RL_mask.png", "right_lung"),
        ("LL_mask.png", "left_lung"),
        ("H_mask.jpg", "heart"),
    ):
        cv2.imwrite(str(folder / fname), organs[organ].astype(np.uint8) * 255)
    geo = _geometry()
    om = _run(source="mask_folder", path="case1", geometry=geo)[0]
    assert set(om.names) == {"right_lung", "left_lung", "heart"}
    for n in om.names:
        agree = (om.get(n)[0] >= 0.5) == _aligned(organs[n], geo)
        assert float(agree.float().mean()) > 0.995, n


def test_npz_source_with_batch_and_same_aspect_other_resolution(input_dir: Path) -> None:
    organs = synthetic_chest(H // 2, W // 2)  # masks at half the radiograph's resolution: same aspect
    stack = np.stack([organs["right_lung"], organs["left_lung"]])[None].repeat(2, axis=0)  # (B=2, K, h, w)
    np.savez(input_dir / "m.npz", masks=stack.astype(np.uint8), names=np.array(["right_lung", "left_lung"]))
    om = _run(source="npz", path="m.npz", geometry=_geometry())[0]
    assert om.masks.shape == (2, 2, 128, 128)


def test_chexmask_source_and_quality(input_dir: Path) -> None:
    organs = synthetic_chest(H, W)
    header = "dicom_id,Dice RCA (Max),Dice RCA (Mean),Landmarks,Left Lung,Right Lung,Heart,Height,Width\n"
    row = f"img9,0.91,0.83,,{encode_rle(organs['left_lung'])},{encode_rle(organs['right_lung'])},"
    row += f"{encode_rle(organs['heart'])},{H},{W}\n"
    (input_dir / "chexmask.csv").write_text(header + row)
    om, _, _, info = _run(source="chexmask_csv", path="chexmask.csv", image_id="img9", geometry=_geometry())
    assert om.names == ("left_lung", "right_lung", "heart") and om.meta["dice_rca_mean"] == pytest.approx(
        0.83
    )
    assert "Dice RCA (Mean) 0.830" in info
    with pytest.raises(ValueError, match="below min_quality 0.900"):
        _run(
            source="chexmask_csv", path="chexmask.csv", image_id="img9", min_quality=0.9, geometry=_geometry()
        )


def test_torchxrayvision_source_without_weights(input_dir: Path) -> None:
    import importlib.util

    installed = importlib.util.find_spec("torchxrayvision") is not None
    with pytest.raises(SegmentationModelError) as err:
        _run(
            source="torchxrayvision", path="", seg_model="cxas_unet_resnet50", image=torch.rand(1, 64, 64, 3)
        )
    assert "baseline_models_cxas_UNet_ResNet50_default_repack.pth' for cxas_unet_resnet50 is not on" in str(
        err.value
    )
    assert "cxr_segmentation" in str(err.value)
    assert ("not installed" in str(err.value)) is (not installed)


# ---- bad input --------------------------------------------------------------------------------
def test_masks_of_another_size_without_geometry_are_refused(input_dir: Path) -> None:
    _write_label_png(input_dir)
    with pytest.raises(GeometryError, match="masks are 240x200.*image is 128x128.*no geometry record"):
        _run(source="label_map", path="labels.png", legend="chexmask", image=torch.rand(1, 128, 128, 3))
    ok = _run(source="label_map", path="labels.png", legend="chexmask", image=torch.rand(1, H, W, 3))[0]
    assert ok.image_size == (H, W)  # same size: fine without a record


def test_other_aspect_with_geometry_and_mismatched_image_are_refused(input_dir: Path) -> None:
    organs = synthetic_chest(200, 200)
    cv2.imwrite(str(input_dir / "sq.png"), label_map(organs, {"right_lung": 1}))
    with pytest.raises(GeometryError, match="same field of view"):
        _run(source="label_map", path="sq.png", legend="chexmask", organs="left lung", geometry=_geometry())
    _write_label_png(input_dir)
    with pytest.raises(GeometryError, match="geometry record's working size is \\(128, 128\\)"):
        _run(source="label_map", path="labels.png", legend="chexmask", geometry=_geometry(),
             image=torch.rand(1, 256, 256, 3))  # fmt: skip


def test_empty_organ_mask_is_refused(input_dir: Path) -> None:
    np.savez(input_dir / "e.npz", heart=np.zeros((H, W), np.uint8), right_lung=np.ones((H, W), np.uint8))
    with pytest.raises(OrganMaskError, match="empty.*'heart'"):
        _run(source="npz", path="e.npz", geometry=_geometry())


def test_unknown_and_absent_organs_list_the_valid_ones(input_dir: Path) -> None:
    _write_label_png(input_dir)
    with pytest.raises(
        OrganMaskError, match=r"unknown organ name\(s\) \['spleen'\]; valid names are .*left_lung"
    ):
        _run(source="label_map", path="labels.png", legend="chexmask", organs="spleen")
    with pytest.raises(OrganMaskError, match=r"\['mediastinum'\] are absent from this source"):
        _run(source="label_map", path="labels.png", legend="chexmask", organs="heart, mediastinum")


def test_label_value_not_in_legend_and_missing_legend(input_dir: Path) -> None:
    _write_label_png(input_dir)
    (input_dir / "two.json").write_text(json.dumps({"1": "right lung", "2": "left lung"}))
    with pytest.raises(LegendError, match=r"label value\(s\) \[3\] that are not in the legend"):
        _run(source="label_map", path="labels.png", legend="json", legend_json="two.json")
    with pytest.raises(MaskSourceError, match="no legend for 'labels.png'"):
        _run(source="label_map", path="labels.png", legend="auto")


def test_nan_and_out_of_range_arrays(input_dir: Path) -> None:
    bad = np.ones((H, W), np.float32)
    bad[0, 0] = np.nan
    np.savez(input_dir / "nan.npz", heart=bad)
    with pytest.raises(MaskSourceError, match="NaN/Inf"):
        _run(source="npz", path="nan.npz")
    np.savez(input_dir / "big.npz", heart=np.full((H, W), 2.0, np.float32))
    with pytest.raises(MaskSourceError, match=r"must lie in \[0, 1\]"):
        _run(source="npz", path="big.npz")


def test_file_inputs_stay_in_the_input_folder(input_dir: Path, tmp_path: Path) -> None:
    _write_label_png(tmp_path)
    with pytest.raises(InputPathError, match="'..' is not allowed"):
        _run(source="label_map", path="../labels.png", legend="chexmask")
    with pytest.raises(InputPathError, match="absolute paths"):
        _run(source="label_map", path=str(tmp_path / "labels.png"), legend="chexmask")
    os.symlink(tmp_path / "labels.png", input_dir / "link.png")
    with pytest.raises(InputPathError, match="outside ComfyUI's input folder"):
        _run(source="label_map", path="link.png", legend="chexmask")
    _write_label_png(input_dir)
    os.symlink(tmp_path / "labels.png", input_dir / "labels.json")  # sidecar legend pointing out
    with pytest.raises(InputPathError, match="outside ComfyUI's input folder"):
        _run(source="label_map", path="labels.png", legend="auto")
    with pytest.raises(InputPathError, match="not found"):
        _run(source="npz", path="missing.npz")
    with pytest.raises(InputPathError, match="expected a folder"):
        _run(source="mask_folder", path="labels.png")


def test_fingerprint_changes_when_the_file_changes(input_dir: Path) -> None:
    _write_label_png(input_dir)
    a = OrganMaskLoader.fingerprint_inputs(source="label_map", path="labels.png")
    cv2.imwrite(str(input_dir / "labels.png"), np.zeros((5, 5), np.uint8))
    os.utime(input_dir / "labels.png", ns=(1, 1))
    assert OrganMaskLoader.fingerprint_inputs(source="label_map", path="labels.png") != a
