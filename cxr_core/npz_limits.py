"""Measure the arrays of an NPZ from their headers before any is decompressed.

An NPZ is a zip of .npy files; a small zip can expand to gigabytes. Each
array's image size (its last two dimensions) must be within the pixel limit
(cxr_core/image_limits.py), and all arrays together within 8 times it.
"""

from __future__ import annotations

import math

import numpy as np

from .image_limits import PixelLimitError, check_pixel_count, max_pixels

TOTAL_FACTOR = 8  # all arrays of one NPZ together: up to 8 x the pixel limit (several organs, a batch)


def check_npz_sizes(npz: np.lib.npyio.NpzFile, what: str) -> None:
    """Raise :class:`PixelLimitError` if an array of ``npz`` is too large, reading only the headers."""
    total = 0
    for key in npz.files:
        shape = _header_shape(npz, key)
        if shape is None:
            continue
        if len(shape) >= 2:
            check_pixel_count(shape[-2], shape[-1], f"{what} array '{key}'", frames=1)
        total += math.prod(shape)
    limit = TOTAL_FACTOR * max_pixels()
    if total > limit:
        raise PixelLimitError(
            f"{what}: its arrays hold {total / 1e6:.1f} million values, above {limit / 1e6:.1f} million "
            f"({TOTAL_FACTOR} x the pixel limit); keep only the organs you need, or raise CXR_MAX_PIXELS"
        )


def _header_shape(npz: np.lib.npyio.NpzFile, key: str) -> tuple[int, ...] | None:
    member = key if key in npz.zip.namelist() else f"{key}.npy"
    try:
        with npz.zip.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(fh)
    except (KeyError, ValueError, OSError):
        return None  # left to np.load, which reports a damaged file
    return tuple(int(d) for d in shape)
