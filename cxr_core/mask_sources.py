"""Organ masks from files: a label-map image with a legend, a folder of per-organ images, an NPZ.

Every reader returns :class:`RawMasks`: organ names and soft masks in [0, 1]
at the file's own resolution. ``organ_mask_loading.finish_masks`` then picks
organs, applies the radiograph's geometry record and builds ``OrganMasks``.

Lossy files (JPEG) are handled, not trusted: label values are snapped to the
nearest legend value (within half the gap between legend values, at least 12
grey levels), seams are cleaned with a 3x3 median, and binary mask images have their
low-level ringing removed (values below 0.1 -> 0, above 0.9 -> 1, linear in
between, so a 0.5 threshold is unchanged).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .image_limits import PixelLimitError, check_raster, is_jpeg
from .input_paths import resolve_input_path
from .label_schemes import LegendError, canonical_class_name
from .npz_limits import check_npz_sizes
from .organ_names import CANONICAL_ORGANS

log = logging.getLogger("cxr_counterfactual.mask_sources")

MASK_IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_LOSSY_LOW, _LOSSY_HIGH = 0.1, 0.9
_GREY_SNAP_TOL = 12  # grey levels a JPEG label value may drift
_COLOUR_SNAP_TOL = 48.0  # Euclidean RGB distance a JPEG label colour may drift
_MAX_UNMATCHED = 0.01  # share of pixels of a lossy label map allowed to match no legend value
_RANGE_TOL = 1e-4


class MaskSourceError(ValueError):
    """A mask file that cannot be used, with what is wrong and how to fix it."""


@dataclass(frozen=True)
class RawMasks:
    names: tuple[str, ...]  # canonical organ names, one per channel
    masks: np.ndarray  # (B, K, h, w) float32 in [0, 1], at the source's own resolution
    scheme: str
    absent: tuple[str, ...] = ()  # organs the source knows but that have no pixels here
    meta: dict = field(default_factory=dict, compare=False)


# ---- value handling ---------------------------------------------------------------------------
def to_unit_mask(arr: np.ndarray, what: str, lossy: bool = False) -> np.ndarray:
    """A mask array of any common encoding -> float32 in [0, 1].

    bool; integers 0/1, 0..255 or 0..65535; floats in [0, 1]. NaN/Inf and
    out-of-range floats are refused, naming ``what``.
    """
    a = np.asarray(arr)
    if a.dtype == bool:
        out = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0:
            raise MaskSourceError(
                f"{what}: integer mask has negative values (min {lo}); expected 0/1 or 0..255"
            )
        scale = 1.0 if hi <= 1 else 255.0 if hi <= 255 else 65535.0 if hi <= 65535 else None
        if scale is None:
            raise MaskSourceError(f"{what}: integer mask values reach {hi}; expected 0/1, 0..255 or 0..65535")
        out = a.astype(np.float32) / scale
    elif np.issubdtype(a.dtype, np.floating):
        out = a.astype(np.float32)
        if not np.isfinite(out).all():
            raise MaskSourceError(
                f"{what}: mask contains {int((~np.isfinite(out)).sum())} NaN/Inf values; fix the file that "
                "wrote it (masks must be finite, in [0, 1])"
            )
        lo, hi = (float(out.min()), float(out.max())) if out.size else (0.0, 0.0)
        if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise MaskSourceError(
                f"{what}: float mask values must lie in [0, 1], received range [{lo:.4g}, {hi:.4g}]; "
                "divide 0..255 masks by 255, or pass probabilities, not logits"
            )
        out = np.clip(out, 0.0, 1.0)
    else:
        raise MaskSourceError(f"{what}: mask has dtype {a.dtype}; expected bool, integer or float")
    if lossy:
        out = np.clip((out - _LOSSY_LOW) / (_LOSSY_HIGH - _LOSSY_LOW), 0.0, 1.0)
    return out


def read_image_array(path: Path, what: str) -> np.ndarray:
    """An image file as an array: (H, W) grey or (H, W, 3) RGB, 8 or 16 bit, unchanged values.

    The pixel count is read from the header and checked before decoding.
    """
    size = check_raster(path, what)
    data = np.fromfile(path, dtype=np.uint8) if size is not None else np.zeros(0, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise MaskSourceError(
            f"{what}: '{path.name}' cannot be decoded as an image (corrupt or not an image)"
        )
    if img.ndim == 3:
        img = img[..., :3]
        if img.shape[2] == 1:
            img = img[..., 0]
        elif np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]):
            img = img[..., 0]
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


# ---- (a) label map ----------------------------------------------------------------------------
def decode_label_map(
    labels: np.ndarray, legend: dict, *, lossy: bool = False, scheme: str = "custom", what: str = "label map"
) -> RawMasks:
    """(H, W) label values or (H, W, 3) colours + legend -> one mask per legend organ.

    Values not in the legend are an error (listing them); 0 is background unless
    the legend names it. Lossy maps snap to the nearest legend value.
    """
    colour = labels.ndim == 3
    colour_legend = all(isinstance(k, tuple) for k in legend)
    if colour != colour_legend:
        raise LegendError(
            f"{what}: the image is {'colour (RGB)' if colour else 'grey'} but the legend lists "
            f"{'RGB colours' if colour_legend else 'grey label values'}; use a matching legend"
        )
    keys = list(legend)
    has_bg = (0, 0, 0) in legend if colour else 0 in legend
    if colour:
        lab = labels.reshape(-1, 3).astype(np.int64)
        codes = (lab[:, 0] << 16) | (lab[:, 1] << 8) | lab[:, 2]
        cand = np.array(([] if has_bg else [(0, 0, 0)]) + keys, dtype=np.float64)  # (L, 3)
        uniq, inverse = np.unique(codes, return_inverse=True)
        uniq_rgb = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.float64)
        diff = np.linalg.norm(uniq_rgb[:, None, :] - cand[None, :, :], axis=2)  # (U, L)
        tol = max(_COLOUR_SNAP_TOL, _half_min_gap(cand))
        shown = [tuple(int(c) for c in rgb) for rgb in uniq_rgb]
    else:
        lab = labels.astype(np.int64).reshape(-1)
        cand = np.array(([] if has_bg else [0]) + keys, dtype=np.int64)
        uniq, inverse = np.unique(lab, return_inverse=True)
        diff = np.abs(uniq[:, None] - cand[None, :]).astype(np.float64)  # (U, L)
        tol = max(_GREY_SNAP_TOL, _half_min_gap(cand[:, None].astype(np.float64)))
        shown = [int(u) for u in uniq]
    nearest = diff.argmin(axis=1)
    best = diff[np.arange(len(uniq)), nearest]
    ok_u = (best == 0) | (lossy & (best <= tol))
    cand_index = nearest - (0 if has_bg else 1)  # index into keys; -1 background
    index = np.where(ok_u, cand_index, -2)[inverse.reshape(-1)].reshape(labels.shape[:2])  # -2 unmatched
    unmatched_values = [shown[i] for i in np.flatnonzero(~ok_u)[:10]]
    if lossy:  # seams between two organs can pass through a third label's value: 3x3 median
        index = (
            cv2.medianBlur((index + 2).astype(np.uint8), 3).astype(np.int64) - 2 if len(keys) < 250 else index
        )
    unmatched = index == -2
    n_bad = int(unmatched.sum())
    if n_bad:
        share = n_bad / unmatched.size
        if not lossy or share > _MAX_UNMATCHED:
            raise LegendError(
                f"{what}: {n_bad} pixels ({share:.2%}) carry label value(s) {unmatched_values} that are not in "
                f"the legend (legend values: {_legend_summary(legend)}); choose the legend that made this map, "
                "or add these values to a JSON legend"
            )
        log.warning("%s: %d JPEG-damaged pixels match no legend value; treated as background", what, n_bad)
    names, masks, absent = [], [], []
    for i, key in enumerate(keys):
        name = legend[key]
        if name == "background":
            continue
        m = index == i
        if not m.any():
            absent.append(name)
            continue
        names.append(name)
        masks.append(m.astype(np.float32))
    if not masks:
        raise MaskSourceError(f"{what}: no organ of the legend has any pixel (is the map all background?)")
    return RawMasks(tuple(names), np.stack(masks)[None], scheme, tuple(absent), {"source": what})


def _half_min_gap(cand: np.ndarray) -> float:
    """Half the smallest distance between two candidate values (rows of ``cand``): the snap limit."""
    if len(cand) < 2:
        return 0.0
    d = np.linalg.norm(cand[:, None, :] - cand[None, :, :], axis=2)
    return float(d[np.triu_indices(len(cand), 1)].min()) / 2.0 - 0.5


def _legend_summary(legend: dict) -> str:
    items = list(legend.items())
    text = ", ".join(f"{k}={v}" for k, v in items[:12])
    return text + (f", ... ({len(items)} in all)" if len(items) > 12 else "")


# ---- (b) folder of per-organ images ------------------------------------------------------------
_NOISE_WORDS = {"mask", "masks", "seg", "segmentation", "label", "binary", "gt"}
_ABBREVIATIONS = {"ll": "left_lung", "rl": "right_lung", "h": "heart", "lh": "left_lung", "rh": "right_lung"}


def organ_from_filename(stem: str) -> str:
    """Organ name of a mask file: 'left lung', 'lung_left', 'L_lung_mask', 'RL_mask' (CheXmask) ..."""
    words = [w for w in re.split(r"[\s_\-.]+", stem.strip().lower()) if w and w not in _NOISE_WORDS]
    if not words:
        raise MaskSourceError(f"mask file '{stem}': its name does not name an organ")
    if len(words) == 1 and words[0] in _ABBREVIATIONS:
        return _ABBREVIATIONS[words[0]]
    return canonical_class_name(" ".join(words))


def read_mask_folder(
    folder: Path, *, what: str = "mask folder", input_dir: str | Path | None = None
) -> RawMasks:
    """One binary or soft image per organ, the organ named by the file name.

    Every file is resolved (symlinks followed) and must lie inside ``input_dir``
    (ComfyUI's input folder; without it, inside ``folder`` itself).
    """
    base = Path(input_dir if input_dir is not None else folder).resolve()
    folder = folder.resolve()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MASK_IMAGE_EXTENSIONS)
    files = [resolve_input_path(p.relative_to(base).as_posix(), base, what=f"{what} file") for p in files]
    if not files:
        raise MaskSourceError(
            f"{what}: '{folder.name}' holds no mask images ({', '.join(MASK_IMAGE_EXTENSIONS)}); expected one "
            "file per organ such as 'left_lung.png', 'right lung.png', 'heart.png'"
        )
    by_name: dict[str, Path] = {}
    for p in files:
        name = organ_from_filename(p.stem)
        if name in by_name:
            raise MaskSourceError(
                f"{what}: '{by_name[name].name}' and '{p.name}' both name the organ '{name}'; keep one"
            )
        by_name[name] = p
    names, masks, size = [], [], None
    for name, p in by_name.items():
        img = read_image_array(p, what)
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if size is not None and img.shape != size:
            raise MaskSourceError(
                f"{what}: '{p.name}' is {img.shape[0]}x{img.shape[1]} but the other masks are {size[0]}x{size[1]}"
            )
        size = img.shape
        names.append(name)
        masks.append(to_unit_mask(img, f"{what} '{p.name}'", lossy=is_jpeg(p)))
    unknown = [n for n in names if n not in CANONICAL_ORGANS]
    if unknown:
        log.info("%s: organ names outside the canonical set kept as custom organs: %s", what, unknown)
    return RawMasks(tuple(names), np.stack(masks)[None], "folder", (), {"source": folder.name})


# ---- (c) NPZ ----------------------------------------------------------------------------------
def read_npz(path: Path, *, what: str = "npz") -> RawMasks:
    """Arrays by organ name (each (H, W) or (B, H, W)), or ``masks`` (K, H, W)/(B, K, H, W) + ``names``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            check_npz_sizes(z, f"{what} '{path.name}'")
            arrays = {k: z[k] for k in z.files}
    except PixelLimitError:
        raise
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise MaskSourceError(
            f"{what}: '{path.name}' holds object arrays, which would need pickle (refused for safety); save "
            "plain numeric arrays (np.savez with bool/uint8/float arrays, names as a string array)"
        ) from exc
    except (OSError, EOFError) as exc:
        raise MaskSourceError(f"{what}: '{path.name}' is not a readable .npz file ({exc})") from exc
    if not arrays:
        raise MaskSourceError(f"{what}: '{path.name}' holds no arrays")
    if "masks" in arrays and "names" in arrays:
        raw_names = [str(n) for n in np.asarray(arrays["names"]).reshape(-1)]
        stack = arrays["masks"]
        if stack.ndim == 3:
            stack = stack[None]
        if stack.ndim != 4 or stack.shape[1] != len(raw_names):
            raise MaskSourceError(
                f"{what}: 'masks' must be (K, H, W) or (B, K, H, W) with K = len(names) = {len(raw_names)}, "
                f"received {tuple(arrays['masks'].shape)}"
            )
        items = [(n, stack[:, k]) for k, n in enumerate(raw_names)]
    else:
        items = []
        for key, arr in arrays.items():
            if arr.ndim not in (2, 3):
                raise MaskSourceError(
                    f"{what}: array '{key}' must be (H, W) or (B, H, W), received {arr.shape}"
                )
            items.append((key, arr if arr.ndim == 3 else arr[None]))
    names, masks = [], []
    for key, arr in items:
        name = canonical_class_name(key)
        if name in names:
            raise MaskSourceError(f"{what}: arrays '{key}' and another both name the organ '{name}'")
        names.append(name)
        masks.append(to_unit_mask(arr, f"{what} array '{key}'"))
    shapes = {m.shape for m in masks}
    if len(shapes) != 1:
        raise MaskSourceError(
            f"{what}: arrays differ in shape {sorted(shapes)}; all organs need one (B, H, W)"
        )
    return RawMasks(tuple(names), np.stack(masks, axis=1), "npz", (), {"source": path.name})
