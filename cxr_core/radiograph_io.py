"""Read a chest radiograph (DICOM, 8/16-bit PNG, JPEG) into grey values in [0, 1].

DICOM follows the standard's display pipeline: stored values -> Modality LUT
(Rescale Slope/Intercept or a Modality LUT Sequence) -> VOI LUT (a VOI LUT
Sequence, else Window Center/Width with its VOI LUT Function) -> [0, 1], then
MONOCHROME1 is inverted so that, as in every other format, air is dark and
bone is bright. Without a VOI in the file, the modality values are stretched
between their minimum and maximum (or their 0.5th and 99.5th percentiles).

PNG and JPEG: 8-bit values are divided by 255. 16-bit PNGs often carry 10-,
12- or 14-bit data, so "auto" divides by the full range of the smallest of
10/12/14/16 bits that holds the maximum value. Colour images become luminance.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .dicom_checks import describe_missing_pixels, layout_problem
from .image_limits import PixelLimitError, check_raster

log = logging.getLogger("cxr_counterfactual.radiograph_io")

INTENSITY_MODES: tuple[str, ...] = ("auto", "minmax", "percentile")
RADIOGRAPH_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom", ".dic", ".png", ".jpg", ".jpeg")
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")
_PERCENTILES = (0.5, 99.5)


class RadiographError(ValueError):
    """A radiograph that cannot be read, with what is wrong and how to fix it."""


@dataclass(frozen=True)
class Radiograph:
    pixels: np.ndarray  # (H, W) float32 in [0, 1]; air dark, bone bright
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


def is_dicom(path: str | os.PathLike) -> bool:
    """True if the file has the DICOM Part 10 preamble ('DICM' at byte 128) or a DICOM extension."""
    p = Path(path)
    return p.suffix.lower() in (".dcm", ".dicom", ".dic") or has_dicom_preamble(p)


def has_dicom_preamble(path: Path) -> bool:
    """True if 'DICM' stands at byte 128 (DICOM Part 10), whatever the file's name."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def load_radiograph(path: str | os.PathLike, intensity: str = "auto") -> Radiograph:
    """Read ``path`` into a :class:`Radiograph`; ``intensity`` is one of :data:`INTENSITY_MODES`."""
    if intensity not in INTENSITY_MODES:
        raise RadiographError(f"intensity must be one of {list(INTENSITY_MODES)}, received '{intensity}'")
    p = Path(path)
    if not p.is_file():
        raise RadiographError(f"radiograph file not found: '{p.name}'")
    if is_dicom(p):
        return _load_dicom(p, intensity)
    return _load_raster(p, intensity)


# ---- DICOM ------------------------------------------------------------------------------------
def _load_dicom(path: Path, intensity: str) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    name = path.name
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise RadiographError(
            f"image '{name}' is not a valid DICOM file ({exc}); re-export it from the PACS or viewer"
        ) from exc
    except Exception as exc:  # truncated headers raise EOFError, OSError, struct errors...
        raise RadiographError(f"image '{name}': the DICOM file is corrupt or truncated ({exc!r})") from exc
    if "PixelData" not in ds:
        raise RadiographError(describe_missing_pixels(ds, path))
    try:
        problem = layout_problem(ds, name)
    except PixelLimitError:
        raise
    except (ValueError, TypeError) as exc:  # a header value that does not parse (e.g. Rows '1A')
        raise RadiographError(
            f"image '{name}': the DICOM header is damaged ({exc}); re-export the file"
        ) from exc
    if problem:
        raise RadiographError(problem)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # truncated pixel data, missing decoder plugin...
        if "less than expected" in str(exc):
            raise RadiographError(
                f"image '{name}': the DICOM pixel data is cut short ({exc}); the file is truncated. Copy it "
                "again from the PACS or the dataset"
            ) from exc
        raise RadiographError(
            f"image '{name}': cannot decode the DICOM pixel data ({exc}). A truncated file gives this; a "
            "compressed one (JPEG 2000, JPEG-LS) needs a decoder plugin such as pylibjpeg or gdcm"
        ) from exc

    meta = {
        "format": "dicom",
        "source": name,
        "modality": str(ds.get("Modality", "")),
        "view_position": str(ds.get("ViewPosition", "") or "").upper(),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
    }
    _check_view(meta, name)
    if meta["bits_stored"] and not 8 <= meta["bits_stored"] <= 16:
        log.warning("%s: BitsStored %d is outside 8..16; decoded anyway", name, meta["bits_stored"])
    if stored.ndim == 3:  # RGB DICOM (secondary capture): luminance, no LUTs apply
        grey = cv2.cvtColor(stored.astype(np.float32), cv2.COLOR_RGB2GRAY)
        return Radiograph(_stretch(grey, "minmax" if intensity == "auto" else intensity), meta)

    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if intensity == "auto":
        x = _apply_voi(values, ds, meta, apply_voi_lut)
        if x is None:
            meta["window"] = "minmax (no VOI in the file)"
            x = _stretch(values, "minmax")
    else:
        meta["window"] = intensity
        x = _stretch(values, intensity)
    if meta["photometric"] == "MONOCHROME1":
        x = 1.0 - x
    return Radiograph(_finite(x, name), meta)


def _apply_voi(values: np.ndarray, ds, meta: dict, apply_voi_lut) -> np.ndarray | None:
    """VOI LUT Sequence or Window Center/Width -> [0, 1]; None if the file has neither (or a broken one)."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2]) if "LUTDescriptor" in item else 16
        out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
        meta["window"] = "VOI LUT sequence"
        return np.clip(out / float(2**bits - 1), 0.0, 1.0)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center = _first(ds.WindowCenter)
        width = _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        if not width > 1.0:
            log.warning("Window Width %s is not usable; stretching min..max instead", width)
            return None
        meta["window"] = f"center {center:g} width {width:g} ({function})"
        if function == "SIGMOID":
            return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
        if function == "LINEAR_EXACT":
            return np.clip((values - center) / width + 0.5, 0.0, 1.0)
        return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)
    return None


def _first(v) -> float:
    try:
        return float(v[0])
    except TypeError:
        return float(v)


def _check_view(meta: dict, name: str) -> None:
    view = meta["view_position"]
    if view not in FRONTAL_VIEWS:
        log.warning(
            "%s: DICOM ViewPosition is '%s', not PA or AP; the organ priors and the method assume a frontal "
            "chest radiograph (check that this is not a lateral view)",
            name,
            view or "missing",
        )
    if meta["modality"] and meta["modality"] not in ("CR", "DX", "DR"):
        log.warning(
            "%s: DICOM Modality is '%s', not CR/DX (a chest radiograph is expected)", name, meta["modality"]
        )


# ---- PNG / JPEG -------------------------------------------------------------------------------
def _load_raster(path: Path, intensity: str) -> Radiograph:
    name = path.name
    size = check_raster(path, "image")
    data = np.fromfile(path, dtype=np.uint8) if size is not None else np.zeros(0, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise RadiographError(
            f"image '{name}' cannot be decoded as PNG or JPEG (corrupt, truncated or another format); "
            "supported: DICOM, 8/16-bit PNG, JPEG"
        )
    if img.ndim == 3:
        img = img[..., :3] if img.shape[2] >= 3 else img[..., 0]
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    meta = {"format": "png" if path.suffix.lower() == ".png" else "raster", "source": name}
    meta["view_position"] = ""
    if img.dtype == np.uint8:
        meta["bits_stored"] = 8
        x = img.astype(np.float64) / 255.0 if intensity == "auto" else _stretch(img, intensity)
    elif img.dtype == np.uint16:
        peak = int(img.max())
        bits = next((b for b in (10, 12, 14, 16) if peak <= 2**b - 1), 16)
        meta["bits_stored"] = bits
        x = img.astype(np.float64) / float(2**bits - 1) if intensity == "auto" else _stretch(img, intensity)
    else:
        raise RadiographError(f"image '{name}' has pixel type {img.dtype}; expected 8- or 16-bit grey")
    meta["window"] = intensity
    return Radiograph(_finite(x, name), meta)


# ---- helpers ----------------------------------------------------------------------------------
def _stretch(values: np.ndarray, mode: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    lo, hi = (float(v.min()), float(v.max())) if mode == "minmax" else np.percentile(v, _PERCENTILES)
    if not hi > lo:
        log.warning("the image is constant (value %g); returning mid-grey", lo)
        return np.full(v.shape, 0.5)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0)


def _finite(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise RadiographError(f"image '{name}' decoded to NaN/Inf values; the file is damaged")
    if math.prod(x.shape) == 0:
        raise RadiographError(f"image '{name}' has no pixels")
    return np.ascontiguousarray(np.clip(x, 0.0, 1.0))
