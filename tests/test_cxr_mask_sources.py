"""Mask readers on bare arrays and files: label maps + legends, mask folders, NPZ, CheXmask, torchxrayvision."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cxr_input_helpers import label_map, synthetic_chest
from cxr_pack.cxr_core.chexmask import ChexmaskError, decode_rle, encode_rle, read_chexmask
from cxr_pack.cxr_core.geometry import ImageGeometry
from cxr_pack.cxr_core.input_paths import shown_path
from cxr_pack.cxr_core.label_schemes import (
    CHESTX_DET_CLASSES,
    CXAS_CLASSES,
    LegendError,
    builtin_legend,
    parse_legend,
)
from cxr_pack.cxr_core.mask_sources import (
    MaskSourceError,
    decode_label_map,
    organ_from_filename,
    read_mask_folder,
    read_npz,
    to_unit_mask,
)
from cxr_pack.cxr_core.segmentation_models import (
    SEG_MODELS,
    SegmentationModelError,
    check_available,
    locate_weights,
    logits_to_masks,
    prepare_input,
    segment,
)


# ---- legends ----------------------------------------------------------------------------------
def test_builtin_schemes_have_their_class_counts_and_unique_names() -> None:
    assert len(CXAS_CLASSES) == 159 and len(CHESTX_DET_CLASSES) == 14
    cxas = builtin_legend("cxas")
    assert len(set(cxas.values())) == 159
    assert cxas[CXAS_CLASSES.index("right lung") + 1] == "right_lung"
    assert cxas[CXAS_CLASSES.index("heart") + 1] == "heart"
    det = builtin_legend("chestx-det")
    assert det[5] == "left_lung" and det[6] == "right_lung" and det[9] == "heart" and det[12] == "mediastinum"
    assert det[13] == "trachea"  # "Weasand"
    assert builtin_legend("chexmask") == {1: "left_lung", 2: "right_lung", 3: "heart"}
    with pytest.raises(LegendError, match="built-in schemes are"):
        builtin_legend("jsrt")


@pytest.mark.parametrize(
    "data",
    [
        {"1": "right lung", "2": "Lung_Left", "3": "heart"},
        {"right lung": 1, "L lung": 2, "cardiac": 3},
        {"labels": {"1": "right_lung", "2": "left_lung", "3": "heart"}},
    ],
)
def test_user_legend_formats(data: dict) -> None:
    assert parse_legend(data) == {1: "right_lung", 2: "left_lung", 3: "heart"}


def test_bad_legends_are_explained() -> None:
    with pytest.raises(LegendError, match="not an integer"):
        parse_legend({"one": "heart"})
    with pytest.raises(LegendError, match="appear under several label values"):
        parse_legend({"1": "left lung", "2": "lung_left"})
    with pytest.raises(LegendError, match="mixes grey label values and RGB"):
        parse_legend({"heart": 1, "left lung": [0, 255, 0]})
    with pytest.raises(LegendError, match="expected a JSON object"):
        parse_legend([1, 2])


# ---- (a) label maps ---------------------------------------------------------------------------
def test_label_map_with_chexmask_scheme() -> None:
    organs = synthetic_chest()
    lab = label_map(organs, {"left_lung": 1, "right_lung": 2, "heart": 3})
    raw = decode_label_map(lab, builtin_legend("chexmask"), scheme="chexmask")
    assert raw.names == ("left_lung", "right_lung", "heart")
    assert raw.masks.shape == (1, 3, 120, 100)
    for k, n in enumerate(raw.names):
        assert np.array_equal(raw.masks[0, k] > 0.5, organs[n])


def test_label_map_with_cxas_and_chestx_det_values() -> None:
    organs = synthetic_chest()
    cxas = builtin_legend("cxas")
    v = {n: k for k, n in cxas.items()}
    raw = decode_label_map(label_map(organs, {"right_lung": v["right_lung"], "heart": v["heart"]}), cxas)
    assert set(raw.names) == {"right_lung", "heart"} and "left_lung" in raw.absent and len(raw.absent) == 157
    det = builtin_legend("chestx-det")
    raw = decode_label_map(label_map(organs, {"left_lung": 5, "right_lung": 6, "mediastinum": 12}), det)
    assert raw.names == ("left_lung", "right_lung", "mediastinum")


def test_label_value_not_in_legend_lists_values() -> None:
    lab = label_map(synthetic_chest(), {"right_lung": 1, "left_lung": 2, "heart": 7})
    with pytest.raises(LegendError, match=r"label value\(s\) \[7\] that are not in the legend.*1=right_lung"):
        decode_label_map(lab, {1: "right_lung", 2: "left_lung"})


def test_jpeg_label_map_snaps_to_the_legend() -> None:
    organs = synthetic_chest(240, 200)
    lab = label_map(organs, {"right_lung": 60, "left_lung": 120, "heart": 180})
    ok, enc = cv2.imencode(".jpg", lab, [cv2.IMWRITE_JPEG_QUALITY, 75])
    jpg = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
    assert len(np.unique(jpg)) > 4  # the codec really did damage the values
    legend = {60: "right_lung", 120: "left_lung", 180: "heart"}
    with pytest.raises(LegendError):
        decode_label_map(jpg, legend, lossy=False)
    raw = decode_label_map(jpg, legend, lossy=True)
    for k, n in enumerate(raw.names):
        dice = (
            2 * (raw.masks[0, k].astype(bool) & organs[n]).sum() / (raw.masks[0, k].sum() + organs[n].sum())
        )
        assert dice > 0.97, (n, dice)


def test_colour_label_map_with_colour_legend() -> None:
    organs = synthetic_chest()
    rgb = np.zeros((*organs["heart"].shape, 3), np.uint8)
    rgb[organs["right_lung"]] = (255, 0, 0)
    rgb[organs["left_lung"]] = (0, 255, 0)
    raw = decode_label_map(rgb, parse_legend({"right lung": [255, 0, 0], "left lung": [0, 255, 0]}))
    assert raw.names == ("right_lung", "left_lung")
    assert np.array_equal(raw.masks[0, 0] > 0, organs["right_lung"])
    with pytest.raises(LegendError, match="colour \\(RGB\\) but the legend lists grey"):
        decode_label_map(rgb, {1: "heart"})


# ---- (b) folders ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stem", "organ"),
    [("left lung", "left_lung"), ("lung_left", "left_lung"), ("L lung", "left_lung"), ("RL_mask", "right_lung"),
     ("LL_mask", "left_lung"), ("H_mask", "heart"), ("heart_seg", "heart"), ("Right-Lung", "right_lung"),
     ("Weasand", "trachea"), ("clavicle left", "left_clavicle")],
)  # fmt: skip
def test_mask_file_names_map_to_organs(stem: str, organ: str) -> None:
    assert organ_from_filename(stem) == organ


def test_mask_folder_binary_jpeg_and_antialiased(tmp_path: Path) -> None:
    organs = synthetic_chest(240, 200)
    cv2.imwrite(str(tmp_path / "lung_right.png"), organs["right_lung"].astype(np.uint8) * 255)
    cv2.imwrite(
        str(tmp_path / "L lung.jpg"),
        organs["left_lung"].astype(np.uint8) * 255,
        [cv2.IMWRITE_JPEG_QUALITY, 70],
    )
    soft = cv2.GaussianBlur(organs["heart"].astype(np.float32), (0, 0), 1.5)  # anti-aliased edge
    cv2.imwrite(str(tmp_path / "heart.png"), (soft * 255).round().astype(np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    raw = read_mask_folder(tmp_path)
    assert set(raw.names) == {"right_lung", "left_lung", "heart"}
    left = raw.masks[0, raw.names.index("left_lung")]
    assert float(left[~organs["left_lung"]].max()) < 0.6  # ringing cleaned: background stays low
    assert (left[~organs["left_lung"]] > 0).mean() < 0.01
    heart = raw.masks[0, raw.names.index("heart")]
    assert 0 < ((heart > 0) & (heart < 1)).sum()  # soft edge kept for "soft" mode
    assert np.logical_xor(heart >= 0.5, organs["heart"]).mean() < 0.01


def test_mask_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(MaskSourceError, match="holds no mask images"):
        read_mask_folder(tmp_path)
    cv2.imwrite(str(tmp_path / "left lung.png"), np.ones((10, 10), np.uint8))
    cv2.imwrite(str(tmp_path / "lung_left.png"), np.ones((10, 10), np.uint8))
    with pytest.raises(MaskSourceError, match="both name the organ 'left_lung'"):
        read_mask_folder(tmp_path)
    (tmp_path / "lung_left.png").unlink()
    cv2.imwrite(str(tmp_path / "heart.png"), np.ones((12, 10), np.uint8))
    with pytest.raises(MaskSourceError, match=r"is \d+x10 but the other masks are \d+x10"):
        read_mask_folder(tmp_path)


# ---- (c) NPZ ----------------------------------------------------------------------------------
def test_npz_by_organ_and_stacked(tmp_path: Path) -> None:
    organs = synthetic_chest()
    np.savez(
        tmp_path / "a.npz",
        **{"Right Lung": organs["right_lung"], "lung_left": organs["left_lung"].astype(np.uint8)},
    )
    raw = read_npz(tmp_path / "a.npz")
    assert raw.names == ("right_lung", "left_lung") and raw.masks.shape == (1, 2, 120, 100)
    stack = np.stack([organs["heart"], organs["right_lung"]]).astype(np.float32)
    np.savez_compressed(tmp_path / "b.npz", masks=stack, names=np.array(["heart", "R lung"]))
    raw = read_npz(tmp_path / "b.npz")
    assert raw.names == ("heart", "right_lung") and np.array_equal(raw.masks[0], stack)


def test_npz_nan_range_pickle_and_shape_errors(tmp_path: Path) -> None:
    bad = np.zeros((8, 8), np.float32)
    bad[2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", heart=bad)
    with pytest.raises(MaskSourceError, match="array 'heart': mask contains 1 NaN/Inf"):
        read_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "logits.npz", heart=np.full((8, 8), 3.5, np.float32))
    with pytest.raises(MaskSourceError, match=r"must lie in \[0, 1\], received range \[3.5, 3.5\]"):
        read_npz(tmp_path / "logits.npz")
    np.savez(tmp_path / "obj.npz", heart=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(MaskSourceError, match="would need pickle"):
        read_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "shape.npz", masks=np.zeros((3, 8, 8)), names=np.array(["heart"]))
    with pytest.raises(MaskSourceError, match="K = len\\(names\\) = 1"):
        read_npz(tmp_path / "shape.npz")
    with pytest.raises(MaskSourceError, match="negative values"):
        to_unit_mask(np.array([[-1, 0]]), "x")


# ---- (d) CheXmask -----------------------------------------------------------------------------
def _chexmask_csv(path: Path, rows: list[dict]) -> None:
    cols = ["dicom_id", "Dice RCA (Max)", "Dice RCA (Mean)", "Landmarks", "Left Lung", "Right Lung", "Heart",
            "Height", "Width"]  # fmt: skip
    with open(path, "w", newline="") as f:
        import csv

        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})


def test_rle_roundtrip_matches_chexmask_convention() -> None:
    m = np.zeros((4, 5), bool)
    m[0, 1:3] = True  # flat indices 1, 2 -> 1-based start 2, length 2
    m[1, 4] = m[2, 0] = True  # 9, 10 -> start 10, length 2
    assert encode_rle(m) == "2 2 10 2"
    assert np.array_equal(decode_rle("2 2 10 2", 4, 5), m)
    organs = synthetic_chest()
    assert np.array_equal(decode_rle(encode_rle(organs["heart"]), 120, 100), organs["heart"])
    with pytest.raises(ChexmaskError, match="outside a 4x5 image"):
        decode_rle("19 5", 4, 5)
    with pytest.raises(ChexmaskError, match="odd number"):
        decode_rle("1 2 3", 4, 5)


def test_chexmask_row_lookup_quality_and_errors(tmp_path: Path) -> None:
    organs = synthetic_chest()
    good = {"dicom_id": "abc123", "Dice RCA (Mean)": "0.86", "Dice RCA (Max)": "0.9",
            "Left Lung": encode_rle(organs["left_lung"]), "Right Lung": encode_rle(organs["right_lung"]),
            "Heart": encode_rle(organs["heart"]), "Height": 120, "Width": 100}  # fmt: skip
    poor = dict(good, dicom_id="poor1", **{"Dice RCA (Mean)": "0.55"})
    no_heart = dict(good, dicom_id="nh", Heart="")
    _chexmask_csv(tmp_path / "MIMIC-CXR-JPG.csv", [poor, good, no_heart])
    raw = read_chexmask(tmp_path / "MIMIC-CXR-JPG.csv", "abc123", 0.7)
    assert raw.names == ("left_lung", "right_lung", "heart") and raw.meta["dice_rca_mean"] == pytest.approx(
        0.86
    )
    assert np.array_equal(raw.masks[0, 1] > 0, organs["right_lung"])
    assert read_chexmask(tmp_path / "MIMIC-CXR-JPG.csv", "files/p10/abc123.jpg", 0.7).names  # by file stem
    with pytest.raises(ChexmaskError, match=r"Dice RCA \(Mean\) = 0.550, below min_quality 0.700"):
        read_chexmask(tmp_path / "MIMIC-CXR-JPG.csv", "poor1", 0.7)
    assert read_chexmask(tmp_path / "MIMIC-CXR-JPG.csv", "poor1", 0.5).meta["dice_rca_mean"] == pytest.approx(
        0.55
    )
    assert read_chexmask(tmp_path / "MIMIC-CXR-JPG.csv", "nh", 0.7).absent == ("heart",)
    with pytest.raises(ChexmaskError, match="image id 'zzz' not found in column 'dicom_id'"):
        read_chexmask(tmp_path / "MIMIC-CXR-JPG.csv", "zzz", 0.7)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ChexmaskError, match="not a CheXmask CSV"):
        read_chexmask(tmp_path / "other.csv", "1", 0.7)


# ---- (e) torchxrayvision ----------------------------------------------------------------------
def _has_xrv() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchxrayvision") is not None


def test_torchxrayvision_missing_pieces_are_named(tmp_path: Path) -> None:
    """Whatever is missing (package, weight file) is named, with what to do. Nothing downloads.

    On this project's host torchxrayvision is not installed, so the package branch runs; where it is
    installed, the same assertions check that only the weight file is reported.
    """
    installed = _has_xrv()
    with pytest.raises(SegmentationModelError) as err:
        check_available("chestx_det_pspnet", "", [tmp_path])
    msg = str(err.value)
    assert ("torchxrayvision package, which is not installed" in msg) is (not installed)
    if not installed:
        assert "pip install torchxrayvision" in msg
    assert (
        "pspnet_chestxray_best_model_4.pth" in msg
        and shown_path(tmp_path) in msg
        and "Nothing is downloaded" in msg
    )
    assert str(tmp_path) not in msg, "error texts do not show the server's absolute folders"
    (tmp_path / "pspnet_chestxray_best_model_4.pth").write_bytes(b"not really weights")
    assert (
        locate_weights("chestx_det_pspnet", "", [tmp_path]) == tmp_path / "pspnet_chestxray_best_model_4.pth"
    )
    with pytest.raises(SegmentationModelError) as err:  # weights present: the package, or the file's content
        segment(torch.zeros(64, 64), "chestx_det_pspnet", "", [tmp_path])
    assert "not on this machine" not in str(err.value)
    assert ("not installed" in str(err.value)) is (not installed)
    with pytest.raises(SegmentationModelError, match="plain file name"):
        locate_weights("cxas_unet_resnet50", "../x.pth", [tmp_path])
    with pytest.raises(SegmentationModelError, match="model must be one of"):
        locate_weights("unet", "", [tmp_path])


def test_model_output_decoding_on_synthetic_logits() -> None:
    """The part of the torchxrayvision path that runs without the package: letterbox in, logits out."""
    organs = synthetic_chest(300, 250)
    grey = torch.from_numpy(organs["right_lung"].astype(np.float32))
    x, geo = prepare_input(grey)
    assert x.shape == (1, 1, 512, 512) and float(x.min()) == -1024.0 and float(x.max()) == 1024.0
    assert geo == ImageGeometry.fit((300, 250), 512, "letterbox")
    spec = SEG_MODELS["chestx_det_pspnet"]
    logits = torch.full((1, 14, 512, 512), -8.0)
    for name, cls in (("left_lung", "Left Lung"), ("right_lung", "Right Lung"), ("heart", "Heart")):
        logits[0, spec.classes.index(cls)] = (
            geo.apply(torch.from_numpy(organs[name].astype(np.float32))) * 16 - 8
        )
    raw = logits_to_masks(logits, "chestx_det_pspnet", geo)
    assert raw.names == ("left_lung", "right_lung", "heart") and raw.masks.shape == (1, 3, 300, 250)
    assert len(raw.absent) == 11
    for k, n in enumerate(raw.names):
        assert (np.logical_xor(raw.masks[0, k] >= 0.5, organs[n])).mean() < 0.01
    with pytest.raises(SegmentationModelError, match="expected \\(1, 159, H, W\\) logits"):
        logits_to_masks(logits, "cxas_unet_resnet50", geo)


def test_legend_json_file(tmp_path: Path) -> None:
    (tmp_path / "l.json").write_text(json.dumps({"1": "right lung"}))
    from cxr_pack.cxr_core.label_schemes import read_legend

    assert read_legend(tmp_path / "l.json") == {1: "right_lung"}
    (tmp_path / "bad.json").write_text("{1: right}")
    with pytest.raises(LegendError, match="cannot read 'bad.json' as JSON"):
        read_legend(tmp_path / "bad.json")
