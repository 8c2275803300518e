"""What the loaders check before they decode a file: its pixel count and its real format.

A 7 KiB PNG can declare 30000 x 30000 pixels and take tens of GiB to decode
(a decompression bomb), so every image, DICOM, label map, mask and NPZ array
is measured from its header first and refused above a pixel limit: 50
megapixels by default (a chest film is 5-12 MP), configurable with the
environment variable ``CXR_MAX_PIXELS``. Whether a mask is lossy JPEG is read
from the file's first bytes, not from its extension.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

MAX_PIXELS_ENV = "CXR_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000
_JPEG_MAGIC = b"\xff\xd8\xff"


class PixelLimitError(ValueError):
    """An image larger than the pack's pixel limit (a real film is far smaller)."""


def max_pixels() -> int:
    """The pixel limit in force: ``CXR_MAX_PIXELS`` if set, else 50 megapixels."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value <= 0:
        raise PixelLimitError(
            f"{MAX_PIXELS_ENV}: expected a positive number of pixels (e.g. 50000000), received {raw!r}; fix or "
            "unset the environment variable of the ComfyUI process"
        )
    return value


def check_pixel_count(height: int, width: int, what: str, frames: int = 1) -> None:
    """Refuse ``height`` x ``width`` (x ``frames``) above :func:`max_pixels`, before anything is decoded."""
    count = int(height) * int(width) * max(1, int(frames))
    limit = max_pixels()
    if count > limit:
        raise PixelLimitError(
            f"{what}: {int(width)} x {int(height)} pixels ({count / 1e6:.1f} MP) is above the limit of "
            f"{limit / 1e6:.1f} MP; a chest film is 5-12 MP. Downscale the file, or raise the limit with the "
            f"environment variable {MAX_PIXELS_ENV} if it is genuine"
        )


def raster_size(path: Path, what: str) -> tuple[int, int] | None:
    """(H, W) from an image file's header without decoding it; None if the header is not an image's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                w, h = im.size
        except Image.DecompressionBombError as exc:
            raise PixelLimitError(
                f"{what}: '{path.name}' declares more pixels than any radiograph ({exc}); refused before "
                f"decoding. Downscale the file, or raise {MAX_PIXELS_ENV} and the limit of Pillow if genuine"
            ) from exc
        except (OSError, ValueError, SyntaxError):
            return None
    return int(h), int(w)


def check_raster(path: Path, what: str) -> tuple[int, int] | None:
    """Measure an image file from its header and refuse it above the pixel limit.

    Returns (H, W), or None when the header is not an image's: the caller then
    refuses the file without decoding it.
    """
    size = raster_size(path, what)
    if size is not None:
        check_pixel_count(*size, f"{what} '{path.name}'")
    return size


def is_jpeg(path: Path) -> bool:
    """True if the file starts with a JPEG marker, whatever its extension."""
    try:
        with open(path, "rb") as fh:
            return fh.read(3) == _JPEG_MAGIC
    except OSError:
        return False
