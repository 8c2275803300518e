"""The bad inputs of docs/errors.md, one function per row: each calls a node the way ComfyUI would.

A case gets a :class:`Ctx` (an empty input folder, an output folder, the tiny
model and the SD1 tokenizer) and must raise; tests/test_errors_catalogue.py
compares the message with the catalogue's row. This file holds the file inputs
(CXRImageLoader, OrganMaskLoader); tests/error_cases_nodes.py the other nodes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
import torch
from cxr_input_helpers import label_map, synthetic_chest
from cxr_pack.cxr_core.demo_assets import demo_radiograph_path
from cxr_pack.cxr_core.geometry import ImageGeometry
from cxr_pack.nodes.organ_mask_loader import OrganMaskLoader
from cxr_pack.nodes.radiograph_loader import CXRImageLoader
from PIL import Image

H, W = 120, 100
PROMPT = "chest x-ray, left pleural effusion"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
PYDICOM_DATA = demo_radiograph_path().parent  # the files of the PyPI package pydicom-data


@dataclass
class Ctx:
    inp: Path  # ComfyUI's input folder (empty at the start of each case)
    out: Path  # ComfyUI's output folder
    model: object  # the tiny SD1.5-structure ModelPatcher
    clip: object  # the SD1 tokenizer (the attention nodes' prompts are built from it, tests/helpers.py)
    text_encoder: object = None  # a real one-layer CLIP (tests/tiny_clip.py), for the CXR Prompt node


CASES: dict[str, Callable[[Ctx], object]] = {}


def case(fn: Callable[[Ctx], object]) -> Callable[[Ctx], object]:
    CASES[fn.__name__] = fn
    return fn


def _labels(ctx: Ctx, name: str = "labels.png", legend: dict | None = None) -> None:
    organs = synthetic_chest(H, W)
    cv2.imwrite(str(ctx.inp / name), label_map(organs, {"right_lung": 1, "left_lung": 2, "heart": 3}))
    if legend is not None:
        (ctx.inp / name).with_suffix(".json").write_text(json.dumps(legend))


def _folder(ctx: Ctx, files: dict[str, str]) -> None:
    (ctx.inp / "case").mkdir()
    organs = synthetic_chest(H, W)
    for fname, organ in files.items():
        cv2.imwrite(str(ctx.inp / "case" / fname), organs[organ].astype(np.uint8) * 255)


# ---- CXRImageLoader -----------------------------------------------------------------------------
@case
def image_empty(ctx: Ctx) -> object:
    return CXRImageLoader.execute("")


@case
def image_dotdot(ctx: Ctx) -> object:
    return CXRImageLoader.execute("../film.dcm")


@case
def image_absolute(ctx: Ctx) -> object:
    return CXRImageLoader.execute("/etc/passwd")


@case
def image_nul(ctx: Ctx) -> object:
    return CXRImageLoader.execute("film\x00.dcm")


@case
def image_symlink_out(ctx: Ctx) -> object:
    os.symlink(demo_radiograph_path(), ctx.inp / "film.dcm")
    return CXRImageLoader.execute("film.dcm")


@case
def image_missing(ctx: Ctx) -> object:
    return CXRImageLoader.execute("film.dcm")


@case
def image_folder(ctx: Ctx) -> object:
    (ctx.inp / "films").mkdir()
    return CXRImageLoader.execute("films")


@case
def image_corrupt_png(ctx: Ctx) -> object:
    (ctx.inp / "film.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return CXRImageLoader.execute("film.png")


@case
def image_not_dicom(ctx: Ctx) -> object:
    (ctx.inp / "film.dcm").write_bytes(b"hello")
    return CXRImageLoader.execute("film.dcm")


@case
def image_truncated_dicom(ctx: Ctx) -> object:
    (ctx.inp / "film.dcm").write_bytes(demo_radiograph_path().read_bytes()[:200])
    return CXRImageLoader.execute("film.dcm")


@case
def image_pixel_data_cut(ctx: Ctx) -> object:
    data = demo_radiograph_path().read_bytes()
    (ctx.inp / "film.dcm").write_bytes(data[: len(data) // 2])
    return CXRImageLoader.execute("film.dcm")


@case
def image_report_dicom(ctx: Ctx) -> object:
    shutil.copy(PYDICOM_FILES / "reportsi.dcm", ctx.inp / "report.dcm")
    return CXRImageLoader.execute("report.dcm")


@case
def image_multi_frame(ctx: Ctx) -> object:
    shutil.copy(PYDICOM_DATA / "SC_rgb_2frame.dcm", ctx.inp / "cine.dcm")
    return CXRImageLoader.execute("cine.dcm")


@case
def image_palette_colour(ctx: Ctx) -> object:
    shutil.copy(PYDICOM_FILES / "examples_palette.dcm", ctx.inp / "us.dcm")
    return CXRImageLoader.execute("us.dcm")


@case
def image_too_many_pixels(ctx: Ctx) -> object:
    Image.new("1", (8000, 8000), 0).save(ctx.inp / "bomb.png", optimize=True)
    return CXRImageLoader.execute("bomb.png")


@case
def image_working_size(ctx: Ctx) -> object:
    Image.new("L", (W, H), 128).save(ctx.inp / "film.png")
    return CXRImageLoader.execute("film.png", working_size=100)


@case
def image_resize_mode(ctx: Ctx) -> object:
    Image.new("L", (W, H), 128).save(ctx.inp / "film.png")
    return CXRImageLoader.execute("film.png", resize_mode="stretch")


@case
def image_intensity(ctx: Ctx) -> object:
    Image.new("L", (W, H), 128).save(ctx.inp / "film.png")
    return CXRImageLoader.execute("film.png", intensity="gamma")


# ---- OrganMaskLoader ----------------------------------------------------------------------------
@case
def masks_source(ctx: Ctx) -> object:
    return OrganMaskLoader.execute(source="xray", path="labels.png")


@case
def masks_path_dotdot(ctx: Ctx) -> object:
    return OrganMaskLoader.execute(source="label_map", path="../labels.png", legend="chexmask")


@case
def masks_path_missing(ctx: Ctx) -> object:
    _labels(ctx, "labels.png")
    return OrganMaskLoader.execute(source="label_map", path="label.png", legend="chexmask")


@case
def masks_folder_is_a_file(ctx: Ctx) -> object:
    _labels(ctx)
    return OrganMaskLoader.execute(source="mask_folder", path="labels.png")


@case
def masks_folder_file_symlink_out(ctx: Ctx) -> object:
    _folder(ctx, {"right_lung.png": "right_lung"})
    os.symlink(demo_radiograph_path(), ctx.inp / "case" / "left_lung.png")
    return OrganMaskLoader.execute(source="mask_folder", path="case")


@case
def masks_folder_empty(ctx: Ctx) -> object:
    (ctx.inp / "case").mkdir()
    return OrganMaskLoader.execute(source="mask_folder", path="case")


@case
def masks_folder_same_organ_twice(ctx: Ctx) -> object:
    _folder(ctx, {"left lung.png": "left_lung", "lung_left.png": "left_lung"})
    return OrganMaskLoader.execute(source="mask_folder", path="case")


@case
def masks_folder_sizes_differ(ctx: Ctx) -> object:
    _folder(ctx, {"left_lung.png": "left_lung"})
    cv2.imwrite(str(ctx.inp / "case" / "heart.png"), np.full((60, 50), 255, np.uint8))
    return OrganMaskLoader.execute(source="mask_folder", path="case")


@case
def masks_npz_pickle(ctx: Ctx) -> object:
    np.savez(ctx.inp / "m.npz", heart=np.array([{"a": 1}], dtype=object))
    return OrganMaskLoader.execute(source="npz", path="m.npz")


@case
def masks_npz_nan(ctx: Ctx) -> object:
    np.savez(ctx.inp / "m.npz", heart=np.full((H, W), np.nan, np.float32))
    return OrganMaskLoader.execute(source="npz", path="m.npz")


@case
def masks_npz_range(ctx: Ctx) -> object:
    np.savez(ctx.inp / "m.npz", heart=np.full((H, W), 3.0, np.float32))
    return OrganMaskLoader.execute(source="npz", path="m.npz")


@case
def masks_npz_too_many_pixels(ctx: Ctx) -> object:
    np.savez_compressed(ctx.inp / "m.npz", heart=np.zeros((8000, 8000), bool))
    return OrganMaskLoader.execute(source="npz", path="m.npz")


@case
def masks_legend_missing(ctx: Ctx) -> object:
    _labels(ctx)
    return OrganMaskLoader.execute(source="label_map", path="labels.png", legend="auto")


@case
def masks_value_not_in_legend(ctx: Ctx) -> object:
    _labels(ctx, legend={"1": "right lung", "2": "left lung"})
    return OrganMaskLoader.execute(source="label_map", path="labels.png", legend="auto")


@case
def masks_legend_json_symlink_out(ctx: Ctx) -> object:
    _labels(ctx)
    (ctx.out / "legend.json").write_text('{"1": "heart"}')
    os.symlink(ctx.out / "legend.json", ctx.inp / "legend.json")
    return OrganMaskLoader.execute(
        source="label_map", path="labels.png", legend="json", legend_json="legend.json"
    )


@case
def masks_image_id(ctx: Ctx) -> object:
    header = "dicom_id,Dice RCA (Max),Dice RCA (Mean),Landmarks,Left Lung,Right Lung,Heart,Height,Width\n"
    (ctx.inp / "cm.csv").write_text(header + "img1,0.9,0.9,,1 5,1 5,1 5,10,10\n")
    return OrganMaskLoader.execute(source="chexmask_csv", path="cm.csv", image_id="img2")


@case
def masks_min_quality(ctx: Ctx) -> object:
    _labels(ctx)
    return OrganMaskLoader.execute(
        source="label_map", path="labels.png", legend="chexmask", min_quality=math.nan
    )


@case
def masks_organs_unknown(ctx: Ctx) -> object:
    _labels(ctx)
    return OrganMaskLoader.execute(source="label_map", path="labels.png", legend="chexmask", organs="spleen")


@case
def masks_organs_absent(ctx: Ctx) -> object:
    _labels(ctx)
    return OrganMaskLoader.execute(source="label_map", path="labels.png", legend="chexmask", organs="trachea")


@case
def masks_mask_mode(ctx: Ctx) -> object:
    _labels(ctx)
    return OrganMaskLoader.execute(
        source="label_map", path="labels.png", legend="chexmask", mask_mode="fuzzy"
    )


@case
def masks_threshold(ctx: Ctx) -> object:
    _labels(ctx)
    return OrganMaskLoader.execute(
        source="label_map", path="labels.png", legend="chexmask", threshold=math.inf
    )


@case
def masks_geometry_other_aspect(ctx: Ctx) -> object:
    _labels(ctx)
    geo = ImageGeometry.fit((H, 2 * W), 128, "letterbox")
    return OrganMaskLoader.execute(source="label_map", path="labels.png", legend="chexmask", geometry=geo)


@case
def masks_image_size_without_geometry(ctx: Ctx) -> object:
    _labels(ctx)
    return OrganMaskLoader.execute(source="label_map", path="labels.png", legend="chexmask",
                                   image=torch.zeros(1, 128, 128, 3))  # fmt: skip
