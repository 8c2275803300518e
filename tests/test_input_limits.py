"""Decompression bombs: every image, DICOM, mask and array is measured before it is decoded (issue 16, item 8)."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pydicom
import pytest
from cxr_pack.cxr_core.demo_assets import demo_radiograph_path
from cxr_pack.cxr_core.image_limits import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, PixelLimitError, max_pixels
from cxr_pack.nodes.organ_mask_loader import OrganMaskLoader
from cxr_pack.nodes.radiograph_loader import CXRImageLoader
from helpers import comfy_folders
from PIL import Image

BOMB = 8000  # an 8000 x 8000 1-bit PNG: a few KiB on disk, 64 MP (1 GB of float64) once decoded
LIMIT_TEXT = r"8000 x 8000 pixels \(64.0 MP\) is above the limit of 50.0 MP"


@pytest.fixture
def input_dir(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    folder = tmp_path / "input"
    with comfy_folders(input=folder):
        yield folder


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (BOMB, BOMB), 0).save(path, optimize=True)
    data = path.read_bytes()
    assert len(data) < 20_000
    return data


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_default_limit_is_50_megapixels(monkeypatch) -> None:
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert max_pixels() == DEFAULT_MAX_PIXELS == 50_000_000


def test_small_png_declaring_64_mp_is_refused_before_decoding(input_dir: Path, bomb_png: bytes) -> None:
    (input_dir / "bomb.png").write_bytes(bomb_png)
    before = _peak_rss_mb()
    with pytest.raises(PixelLimitError, match=rf"image 'bomb.png': {LIMIT_TEXT}.*{MAX_PIXELS_ENV}"):
        CXRImageLoader.execute("bomb.png")
    assert _peak_rss_mb() - before < 200, "the image must not have been decoded"


def test_bomb_as_label_map_mask_file_npz_and_chexmask_row(input_dir: Path, bomb_png: bytes) -> None:
    (input_dir / "labels.png").write_bytes(bomb_png)
    with pytest.raises(PixelLimitError, match=LIMIT_TEXT):
        OrganMaskLoader.execute(source="label_map", path="labels.png", legend="chexmask")
    (input_dir / "case").mkdir()
    (input_dir / "case" / "heart.png").write_bytes(bomb_png)
    with pytest.raises(PixelLimitError, match=rf"'heart.png': {LIMIT_TEXT}"):
        OrganMaskLoader.execute(source="mask_folder", path="case")
    np.savez_compressed(input_dir / "m.npz", heart=np.zeros((BOMB, BOMB), bool))
    with pytest.raises(PixelLimitError, match=rf"'m.npz' array 'heart': {LIMIT_TEXT}"):
        OrganMaskLoader.execute(source="npz", path="m.npz")
    header = "dicom_id,Dice RCA (Max),Dice RCA (Mean),Landmarks,Left Lung,Right Lung,Heart,Height,Width\n"
    (input_dir / "cm.csv").write_text(header + f"img1,0.9,0.9,,1 5,1 5,1 5,{BOMB},{BOMB}\n")
    with pytest.raises(PixelLimitError, match=rf"row 'img1' \(Height x Width\): {LIMIT_TEXT}"):
        OrganMaskLoader.execute(source="chexmask_csv", path="cm.csv", image_id="img1")


def test_dicom_declaring_too_many_pixels_is_refused_from_its_header(input_dir: Path) -> None:
    ds = pydicom.dcmread(demo_radiograph_path())
    ds.Rows, ds.Columns = BOMB, BOMB
    ds.save_as(input_dir / "big.dcm")
    with pytest.raises(PixelLimitError, match=rf"image 'big.dcm': {LIMIT_TEXT}"):
        CXRImageLoader.execute("big.dcm")


def test_the_limit_is_configurable(input_dir: Path, monkeypatch) -> None:
    Image.new("L", (100, 120), 128).save(input_dir / "small.png")
    CXRImageLoader.execute("small.png", working_size=64)
    monkeypatch.setenv(MAX_PIXELS_ENV, "10000")
    with pytest.raises(PixelLimitError, match=r"100 x 120 pixels \(0.0 MP\) is above the limit of 0.0 MP"):
        CXRImageLoader.execute("small.png", working_size=64)
    monkeypatch.setenv(MAX_PIXELS_ENV, "12000")
    CXRImageLoader.execute("small.png", working_size=64)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(PixelLimitError, match=rf"{MAX_PIXELS_ENV}: expected a positive number of pixels"):
        CXRImageLoader.execute("small.png", working_size=64)
