"""CXRImageLoader and radiograph reading: the real DICOM, PNG 8/16-bit, JPEG, and bad input."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import torch
from cxr_pack.cxr_core.demo_assets import demo_radiograph_path
from cxr_pack.cxr_core.geometry import ImageGeometry
from cxr_pack.cxr_core.input_paths import InputPathError, resolve_input_path
from cxr_pack.cxr_core.radiograph_io import RadiographError, load_radiograph
from cxr_pack.nodes.radiograph_loader import CXRImageLoader
from helpers import comfy_folders


@pytest.fixture
def input_dir(tmp_path: Path):
    folder = tmp_path / "input"
    with comfy_folders(input=folder):
        yield folder


@pytest.fixture(scope="module")
def rg1() -> Path:
    return demo_radiograph_path()


# ---- the real DICOM ---------------------------------------------------------------------------
def test_real_dicom_is_read_with_its_window_and_inverted(rg1: Path) -> None:
    r = load_radiograph(rg1)
    ds = pydicom.dcmread(rg1)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert r.size == (1955, 1841)
    assert r.pixels.dtype == np.float32 and 0.0 <= r.pixels.min() and r.pixels.max() <= 1.0
    assert r.meta["window"].startswith("center 15000 width 30000")
    assert r.meta["view_position"] == "PA" and r.meta["bits_stored"] == 15
    # MONOCHROME1: high stored values are dark, so after inversion the output falls as stored values rise
    stored = ds.pixel_array.astype(np.float64)
    expected = 1.0 - np.clip((stored - 14999.5) / 29999.0 + 0.5, 0, 1)
    assert np.allclose(r.pixels, expected, atol=1e-5)
    # anatomy check: the mediastinum (centre column band) is brighter than the lungs (left/right thirds)
    mid = r.pixels[700:1200, 850:1000].mean()
    lungs = (r.pixels[500:1000, 350:650].mean() + r.pixels[500:1000, 1200:1500].mean()) / 2
    assert mid > lungs + 0.1


def test_real_dicom_minmax_and_percentile_modes(rg1: Path) -> None:
    mm = load_radiograph(rg1, "minmax").pixels
    pc = load_radiograph(rg1, "percentile").pixels
    assert mm.min() == 0.0 and mm.max() == 1.0
    assert (pc == 0.0).mean() > 0.001 and (pc == 1.0).mean() > 0.001  # clipped tails


def test_loader_node_outputs_working_image_geometry_and_content(input_dir: Path, rg1: Path) -> None:
    shutil.copy(rg1, input_dir / "chest.dcm")
    image, geometry, content = CXRImageLoader.execute("chest.dcm", 512, "letterbox", "auto", False).result
    assert image.shape == (1, 512, 512, 3) and image.dtype == torch.float32
    assert torch.equal(image[..., 0], image[..., 2])
    assert isinstance(geometry, ImageGeometry)
    assert geometry.original_size == (1955, 1841) and geometry.working_size == (512, 512)
    assert content.shape == (1, 512, 512)
    left = geometry.pad[2]
    assert float(image[0, :, :left].abs().max()) == 0.0  # zero padding
    assert float(content[0, :, :left].max()) == 0.0 and float(content[0, :, left + 5].min()) == 1.0
    inv = CXRImageLoader.execute("chest.dcm", 512, "letterbox", "auto", True).result[0]
    assert torch.allclose(inv[0, :, left + 1 : -left - 1], 1 - image[0, :, left + 1 : -left - 1], atol=1e-5)
    wide = CXRImageLoader.execute("chest.dcm", 768, "fit_pad64", "auto", False).result
    assert wide[0].shape == (1, 768, 768, 3)  # 768 x 723 padded to 768


def test_dicom_without_extension_is_recognised(input_dir: Path, rg1: Path) -> None:
    shutil.copy(rg1, input_dir / "IM0001")
    assert CXRImageLoader.execute("IM0001").result[0].shape == (1, 512, 512, 3)


def test_non_frontal_view_warns(tmp_path: Path, rg1: Path, caplog) -> None:
    ds = pydicom.dcmread(rg1)
    ds.ViewPosition = "LL"
    path = tmp_path / "lateral.dcm"
    ds.save_as(path)
    with caplog.at_level(logging.WARNING, logger="cxr_counterfactual"):
        r = load_radiograph(path)
    assert r.meta["view_position"] == "LL"
    assert any("not PA or AP" in rec.getMessage() for rec in caplog.records)


def test_voi_lut_function_sigmoid_and_missing_window(tmp_path: Path, rg1: Path) -> None:
    ds = pydicom.dcmread(rg1)
    ds.VOILUTFunction = "SIGMOID"
    ds.save_as(tmp_path / "sig.dcm")
    sig = load_radiograph(tmp_path / "sig.dcm")
    stored = ds.pixel_array.astype(np.float64)
    assert np.allclose(sig.pixels, 1 - 1 / (1 + np.exp(-4 * (stored - 15000) / 30000)), atol=1e-5)
    del ds.WindowCenter
    del ds.WindowWidth
    del ds.VOILUTFunction
    ds.save_as(tmp_path / "nowin.dcm")
    r = load_radiograph(tmp_path / "nowin.dcm")
    assert "minmax" in r.meta["window"] and r.pixels.min() == 0.0 and r.pixels.max() == 1.0


# ---- PNG / JPEG -------------------------------------------------------------------------------
def test_png_8_and_16_bit_and_jpeg(tmp_path: Path) -> None:
    ramp8 = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    cv2.imwrite(str(tmp_path / "a.png"), ramp8)
    r8 = load_radiograph(tmp_path / "a.png")
    assert np.allclose(r8.pixels[0], np.arange(256) / 255, atol=1e-6)
    ramp12 = np.tile(np.linspace(0, 4095, 300).astype(np.uint16), (40, 1))  # 12-bit data in a 16-bit PNG
    cv2.imwrite(str(tmp_path / "b.png"), ramp12)
    r16 = load_radiograph(tmp_path / "b.png")
    assert r16.meta["bits_stored"] == 12
    assert r16.pixels.max() == pytest.approx(1.0) and r16.pixels.min() == 0.0
    full16 = (ramp12.astype(np.uint32) * 16).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "c.png"), full16)
    assert load_radiograph(tmp_path / "c.png").meta["bits_stored"] == 16
    colour = np.dstack([ramp8, ramp8, ramp8])
    cv2.imwrite(str(tmp_path / "d.jpg"), colour, [cv2.IMWRITE_JPEG_QUALITY, 95])
    rj = load_radiograph(tmp_path / "d.jpg")
    assert rj.pixels.shape == (64, 256) and abs(float(rj.pixels[:, 128].mean()) - 128 / 255) < 0.03


# ---- bad input --------------------------------------------------------------------------------
def test_missing_file_names_the_input_and_suggests(input_dir: Path) -> None:
    (input_dir / "chest_pa.png").write_bytes(b"x")
    with pytest.raises(InputPathError, match=r"CXRImageLoader image: 'chest_pa.pgn' not found.*chest_pa.png"):
        CXRImageLoader.execute("chest_pa.pgn")


@pytest.mark.parametrize("name", ["../secret.dcm", "sub/../../secret.dcm", "..\\secret.dcm"])
def test_parent_paths_are_refused(input_dir: Path, name: str) -> None:
    (input_dir.parent / "secret.dcm").write_bytes(b"x")
    with pytest.raises(InputPathError, match=r"'\.\.' is not allowed"):
        CXRImageLoader.execute(name)


def test_absolute_paths_are_refused(input_dir: Path, rg1: Path) -> None:
    with pytest.raises(InputPathError, match="absolute paths are not allowed"):
        CXRImageLoader.execute(str(rg1))
    with pytest.raises(InputPathError, match="absolute paths are not allowed"):
        resolve_input_path("C:\\data\\x.dcm", input_dir)


def test_symlink_out_of_the_input_folder_is_refused(input_dir: Path, rg1: Path) -> None:
    os.symlink(rg1, input_dir / "link.dcm")
    with pytest.raises(InputPathError, match="outside ComfyUI's input folder"):
        CXRImageLoader.execute("link.dcm")
    os.symlink(input_dir.parent, input_dir / "up")
    with pytest.raises(InputPathError, match="outside ComfyUI's input folder"):
        resolve_input_path("up/anything", input_dir)


def test_symlink_inside_the_input_folder_is_fine(input_dir: Path, rg1: Path) -> None:
    shutil.copy(rg1, input_dir / "real.dcm")
    os.symlink(input_dir / "real.dcm", input_dir / "alias.dcm")
    assert resolve_input_path("alias.dcm", input_dir) == (input_dir / "real.dcm").resolve()


def test_not_a_dicom_and_truncated_dicom(input_dir: Path, rg1: Path) -> None:
    (input_dir / "junk.dcm").write_bytes(b"this is not a dicom file at all" * 10)
    with pytest.raises(RadiographError, match="junk.dcm.*(not a valid DICOM|corrupt or truncated)"):
        CXRImageLoader.execute("junk.dcm")
    data = rg1.read_bytes()
    (input_dir / "half.dcm").write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    with pytest.raises(
        RadiographError,
        match="half.dcm.*(cannot decode the DICOM pixel data|corrupt or truncated|file is truncated)",
    ):
        CXRImageLoader.execute("half.dcm")
    (input_dir / "head.dcm").write_bytes(data[:200])  # cut inside the header
    with pytest.raises(RadiographError, match="head.dcm"):
        CXRImageLoader.execute("head.dcm")


def test_corrupt_png_is_refused(input_dir: Path) -> None:
    (input_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(RadiographError, match="broken.png.*cannot be decoded"):
        CXRImageLoader.execute("broken.png")
