"""File inputs a careless or hostile user gives (issue 16, items 4, 5, 6 and 9)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from cxr_input_helpers import label_map, synthetic_chest
from cxr_pack.cxr_core import input_paths
from cxr_pack.cxr_core.demo_assets import demo_radiograph_path
from cxr_pack.cxr_core.input_paths import InputPathError, list_input_files
from cxr_pack.cxr_core.mask_sources import read_mask_folder, read_npz
from cxr_pack.cxr_core.radiograph_io import RADIOGRAPH_EXTENSIONS, RadiographError, has_dicom_preamble
from cxr_pack.nodes.organ_mask_loader import OrganMaskLoader
from cxr_pack.nodes.radiograph_loader import CXRImageLoader
from helpers import comfy_folders

H, W = 120, 100
DATA_STORE = demo_radiograph_path().parent  # pydicom-data's files
PYDICOM_FILES = Path(__import__("pydicom").__file__).parent / "data" / "test_files"
# the multi-frame and colour DICOMs that used to fail with a mask/CheXmask message from geometry.py
MULTI_FRAME_COLOUR = ["SC_rgb_2frame.dcm", "SC_rgb_rle_2frame.dcm", "color3d_jpeg_baseline.dcm",
                      "examples_ybr_color.dcm", "SC_rgb_16bit_2frame.dcm", "SC_rgb_32bit_2frame.dcm",
                      "SC_rgb_expb_2frame.dcm", "SC_rgb_expb_16bit_2frame.dcm", "SC_rgb_expb_32bit_2frame.dcm",
                      "SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_rle_32bit_2frame.dcm"]  # fmt: skip


@pytest.fixture
def input_dir(tmp_path: Path):
    folder = tmp_path / "input"
    with comfy_folders(input=folder):
        yield folder


def _mask_folder(folder: Path) -> None:
    folder.mkdir()
    organs = synthetic_chest(H, W)
    for name in ("right_lung", "left_lung", "heart"):
        cv2.imwrite(str(folder / f"{name}.png"), organs[name].astype(np.uint8) * 255)


# ---- item 4: files inside a mask folder ---------------------------------------------------------
def test_symlinked_file_in_a_mask_folder_that_points_outside_is_refused(
    input_dir: Path, tmp_path: Path
) -> None:
    _mask_folder(input_dir / "case")
    outside = tmp_path / "secret"
    _mask_folder(outside)
    (input_dir / "case" / "heart.png").unlink()
    os.symlink(outside / "heart.png", input_dir / "case" / "heart.png")
    with pytest.raises(InputPathError, match="mask_folder\\) file: 'case/heart.png' resolves outside"):
        OrganMaskLoader.execute(source="mask_folder", path="case")
    with pytest.raises(InputPathError, match="resolves outside"):
        read_mask_folder(
            input_dir / "case"
        )  # without an input folder, the mask folder itself is the boundary


def test_symlink_to_a_file_elsewhere_in_the_input_folder_is_read(input_dir: Path) -> None:
    _mask_folder(input_dir / "case")
    _mask_folder(input_dir / "other")
    (input_dir / "case" / "heart.png").unlink()
    os.symlink(input_dir / "other" / "heart.png", input_dir / "case" / "heart.png")
    om = OrganMaskLoader.execute(source="mask_folder", path="case").result[0]
    assert set(om.names) == {"right_lung", "left_lung", "heart"}


# ---- item 5: DICOMs the loader cannot use --------------------------------------------------------
@pytest.mark.parametrize("folder", [DATA_STORE, PYDICOM_FILES], ids=["pydicom-data", "pydicom"])
def test_every_pydicom_test_file_loads_or_is_refused_for_what_it_is(folder: Path) -> None:
    with comfy_folders(input=folder):
        names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        names = [n for n in names if not n.endswith((".py", ".pyc", ".gz", ".bz2", ".json", ".txt", ".icc"))]
        loaded = refused = 0
        for name in names:
            try:
                image, geometry, _ = CXRImageLoader.execute(name, working_size=64).result
            except RadiographError as exc:
                refused += 1
                assert "mask" not in str(exc) and "CheXmask" not in str(exc), name
                assert str(exc).startswith(f"CXRImageLoader: image '{Path(name).name}'"), str(exc)
            else:
                loaded += 1
                assert image.shape[1:] == (64, 64, 3) and geometry.working_size == (64, 64)
    assert loaded > 30 and refused > 10


def _home(name: str) -> Path:
    """The folder (pydicom-data's or pydicom's own) that holds a test file."""
    return DATA_STORE if (DATA_STORE / name).is_file() else PYDICOM_FILES


@pytest.mark.parametrize("name", MULTI_FRAME_COLOUR)
def test_multi_frame_dicoms_are_refused_naming_their_frames(name: str) -> None:
    with comfy_folders(input=_home(name)):
        with pytest.raises(
            RadiographError, match=rf"'{name}': the DICOM holds \d+ frames .* Export the frame"
        ):
            CXRImageLoader.execute(name, working_size=64)


def test_palette_colour_dicom_is_refused_naming_its_photometric_interpretation() -> None:
    with comfy_folders(input=_home("examples_palette.dcm")):
        with pytest.raises(
            RadiographError, match="photometric interpretation PALETTE COLOR is not supported"
        ):
            CXRImageLoader.execute("examples_palette.dcm", working_size=64)


def test_single_frame_colour_dicom_is_read_as_luminance() -> None:
    with comfy_folders(input=_home("examples_rgb_color.dcm")):
        image = CXRImageLoader.execute("examples_rgb_color.dcm", working_size=64).result[0]
    assert image.shape == (1, 64, 64, 3) and float(image.std()) > 0.05


# ---- item 6: fingerprints of folders and legends -------------------------------------------------
def test_mask_folder_fingerprint_is_stable_and_follows_its_files(input_dir: Path) -> None:
    _mask_folder(input_dir / "case")
    a = OrganMaskLoader.fingerprint_inputs(source="mask_folder", path="case")
    assert a == OrganMaskLoader.fingerprint_inputs(source="mask_folder", path="case")
    cv2.imwrite(str(input_dir / "case" / "heart.png"), np.zeros((H, W), np.uint8))
    os.utime(input_dir / "case" / "heart.png", ns=(1, 1))
    assert OrganMaskLoader.fingerprint_inputs(source="mask_folder", path="case") != a


def test_editing_the_auto_legend_sidecar_changes_the_fingerprint(input_dir: Path) -> None:
    organs = synthetic_chest(H, W)
    cv2.imwrite(str(input_dir / "labels.png"), label_map(organs, {"right_lung": 1, "left_lung": 2}))
    sidecar = input_dir / "labels.json"
    sidecar.write_text(json.dumps({"1": "right lung", "2": "left lung"}))
    a = OrganMaskLoader.fingerprint_inputs(source="label_map", path="labels.png", legend="auto")
    sidecar.write_text(json.dumps({"1": "left lung", "2": "right lung"}))
    os.utime(sidecar, ns=(1, 1))
    assert OrganMaskLoader.fingerprint_inputs(source="label_map", path="labels.png", legend="auto") != a


# ---- item 9: the smaller ones --------------------------------------------------------------------
def test_nul_byte_in_a_file_name_is_refused_by_name(input_dir: Path) -> None:
    with pytest.raises(
        InputPathError, match=r"CXRImageLoader image: the file name 'a\\x00b.dcm' contains a control"
    ):
        CXRImageLoader.execute("a\x00b.dcm")
    with pytest.raises(InputPathError, match="OrganMaskLoader \\(npz\\) path: the file name"):
        OrganMaskLoader.execute(source="npz", path="m\x00.npz")


def test_dicom_cut_after_200_bytes_is_reported_as_truncated(input_dir: Path) -> None:
    (input_dir / "cut.dcm").write_bytes(demo_radiograph_path().read_bytes()[:200])
    with pytest.raises(
        RadiographError, match="'cut.dcm': the file \\(.*\\) ends after 200 bytes .* truncated"
    ):
        CXRImageLoader.execute("cut.dcm")


def test_a_report_dicom_is_named_as_what_it_is() -> None:
    with comfy_folders(input=PYDICOM_FILES):
        with pytest.raises(RadiographError, match="not an image but 'Basic Text SR Storage'"):
            CXRImageLoader.execute("reportsi.dcm")


def test_jpeg_masks_are_recognised_by_content_not_extension(input_dir: Path, caplog) -> None:
    organs = synthetic_chest(H, W)
    ok, jpeg = cv2.imencode(".jpg", label_map(organs, {"right_lung": 60, "left_lung": 120, "heart": 180}))
    (input_dir / "labels.png").write_bytes(jpeg.tobytes())  # a JPEG named .png
    (input_dir / "labels.json").write_text(
        json.dumps({"60": "right lung", "120": "left lung", "180": "heart"})
    )
    with caplog.at_level(logging.WARNING):
        om = OrganMaskLoader.execute(source="label_map", path="labels.png").result[0]
    assert set(om.names) == {"right_lung", "left_lung", "heart"}


def test_extensionless_dicoms_are_in_the_image_dropdown(input_dir: Path) -> None:
    shutil.copy(demo_radiograph_path(), input_dir / "IM0001")
    (input_dir / "notes").write_text("not an image")
    (input_dir / "sub").mkdir()
    shutil.copy(demo_radiograph_path(), input_dir / "sub" / "film.dcm")
    options = _image_options()
    assert "IM0001" in options and "sub/film.dcm" in options and "notes" not in options


def test_error_texts_do_not_reveal_the_servers_folders(input_dir: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path, input_dir / "up")
    for name in ("missing.dcm", "../x.dcm", str(tmp_path / "x.dcm"), "up/x.dcm", "a\x00b"):
        with pytest.raises(InputPathError) as err:
            CXRImageLoader.execute(name)
        assert str(input_dir) not in str(err.value) and str(tmp_path) not in str(err.value).replace(name, "")


def test_the_dropdown_listing_is_cached_until_a_folder_changes(input_dir: Path, monkeypatch) -> None:
    for i in range(300):
        (input_dir / f"img_{i:04d}.png").write_bytes(b"x")
    calls = []
    real_scandir = os.scandir
    monkeypatch.setattr(input_paths.os, "scandir", lambda p: calls.append(p) or real_scandir(p))
    first = list_input_files(input_dir, RADIOGRAPH_EXTENSIONS, sniff=has_dicom_preamble)
    assert len(first) == 300 and len(calls) == 1
    assert list_input_files(input_dir, RADIOGRAPH_EXTENSIONS, sniff=has_dicom_preamble) == first
    assert len(calls) == 1, "an unchanged folder is not read again"
    time.sleep(0.01)
    (input_dir / "new.png").write_bytes(b"x")
    assert "new.png" in list_input_files(input_dir, RADIOGRAPH_EXTENSIONS, sniff=has_dicom_preamble)
    assert len(calls) == 2


def test_npz_masks_still_read_after_the_header_check(tmp_path: Path) -> None:
    organs = synthetic_chest(H, W)
    np.savez(tmp_path / "m.npz", left_lung=organs["left_lung"], heart=organs["heart"].astype(np.float32))
    raw = read_npz(tmp_path / "m.npz")
    assert raw.names == ("left_lung", "heart") and raw.masks.shape == (1, 2, H, W)


def _image_options() -> list[str]:
    (image_input,) = [i for i in CXRImageLoader.define_schema().inputs if i.id == "image"]
    return list(image_input.options)
