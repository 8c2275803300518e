"""A small PNG of a radiograph file for the editor (the browser cannot draw DICOM).

Read with the loader's own code (cxr_core/radiograph_io.py, intensity 'auto'),
so the preview shows what CXRImageLoader will load, before any resize or padding.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from .radiograph_io import load_radiograph

PREVIEW_MAX_SIDE = 512


def preview_png(path: str | os.PathLike, max_side: int = PREVIEW_MAX_SIDE) -> bytes:
    """PNG bytes: the radiograph in 8-bit grey, its long side at most ``max_side`` pixels."""
    radiograph = load_radiograph(path, "auto")
    grey = np.clip(radiograph.pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)  # (H0, W0)
    img = Image.fromarray(grey, mode="L")
    img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
