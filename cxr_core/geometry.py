"""The geometry record: how a radiograph was resized and padded to its working size.

``CXRImageLoader`` resizes a radiograph (aspect preserved) and pads it to the
working size the diffusion model wants (multiples of 64). Organ masks must
follow exactly the same transform, so the transform travels as one small
immutable record on the ``CXR_GEOMETRY`` socket. ``apply`` maps an array at
the original resolution to the working canvas; ``invert`` maps it back.

Coordinates: (H, W) everywhere; pads are (top, bottom, left, right) in working
pixels. The resized content occupies rows ``top : top + resized_h`` and columns
``left : left + resized_w`` of the working canvas.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger("cxr_counterfactual.geometry")

RESIZE_MODES: tuple[str, ...] = ("letterbox", "fit_pad64", "native_pad64")
_ASPECT_TOL = 0.01  # relative aspect difference tolerated when conforming masks of another resolution


class GeometryError(ValueError):
    """A geometry record or an array that does not fit it, with how to fix it."""


def _round_up(x: int, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


@dataclass(frozen=True)
class ImageGeometry:
    original_size: tuple[int, int]  # (H, W) of the source radiograph
    scale: float  # working pixels per original pixel (same on both axes)
    resized_size: tuple[int, int]  # (H, W) of the content after resizing, before padding
    pad: tuple[int, int, int, int]  # (top, bottom, left, right) zero padding in working pixels
    working_size: tuple[int, int]  # (H, W) of the working canvas = resized + pad

    def __post_init__(self) -> None:
        oh, ow = self.original_size
        rh, rw = self.resized_size
        top, bottom, left, right = self.pad
        if min(oh, ow, rh, rw) <= 0 or min(self.pad) < 0 or not self.scale > 0:
            raise GeometryError(f"CXR_GEOMETRY: invalid record {self}")
        if (rh + top + bottom, rw + left + right) != tuple(self.working_size):
            raise GeometryError(
                f"CXR_GEOMETRY: resized {self.resized_size} plus pad {self.pad} does not give working size "
                f"{self.working_size}"
            )

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, original_size: tuple[int, int], size: int = 512, mode: str = "letterbox", multiple: int = 64
    ) -> ImageGeometry:
        """The transform for a radiograph of ``original_size`` (H, W).

        - ``letterbox``: scale so the long side is ``size``, pad (centred) to ``size`` x ``size``.
        - ``fit_pad64``: scale so the long side is ``size``, pad the short side up to a multiple of 64.
        - ``native_pad64``: keep the original resolution, pad both sides up to a multiple of 64.
        """
        oh, ow = int(original_size[0]), int(original_size[1])
        if oh <= 0 or ow <= 0:
            raise GeometryError(f"CXR_GEOMETRY: original size must be positive, received {original_size}")
        if mode not in RESIZE_MODES:
            raise GeometryError(f"resize_mode must be one of {list(RESIZE_MODES)}, received '{mode}'")
        if mode != "native_pad64" and (size < multiple or size % multiple):
            raise GeometryError(f"working size must be a positive multiple of {multiple}, received {size}")
        if mode == "native_pad64":
            scale = 1.0
            rh, rw = oh, ow
            th, tw = _round_up(oh, multiple), _round_up(ow, multiple)
        else:
            scale = size / max(oh, ow)
            rh, rw = max(1, round(oh * scale)), max(1, round(ow * scale))
            if mode == "letterbox":
                th, tw = size, size
            else:
                th, tw = _round_up(rh, multiple), _round_up(rw, multiple)
        top, left = (th - rh) // 2, (tw - rw) // 2
        return cls((oh, ow), float(scale), (rh, rw), (top, th - rh - top, left, tw - rw - left), (th, tw))

    @classmethod
    def identity(cls, size: tuple[int, int]) -> ImageGeometry:
        h, w = int(size[0]), int(size[1])
        return cls((h, w), 1.0, (h, w), (0, 0, 0, 0), (h, w))

    # ---- transforms ---------------------------------------------------------------------------
    def conform(self, x: torch.Tensor, what: str = "mask") -> torch.Tensor:
        """Bring (..., h, w) ``x`` to ``original_size`` when it only differs in resolution.

        Masks are often stored at another resolution than the radiograph (e.g. a
        512 px segmentation of a 2048 px film). Same aspect ratio (within 1%):
        resized. Different aspect: refused, because no resize can align them.
        """
        h, w = x.shape[-2:]
        oh, ow = self.original_size
        if (h, w) == (oh, ow):
            return x
        rel = abs((h / w) / (oh / ow) - 1.0)
        if rel > _ASPECT_TOL:
            raise GeometryError(
                f"{what} is {h}x{w} (H x W, aspect {h / w:.4f}) but the radiograph is {oh}x{ow} "
                f"(aspect {oh / ow:.4f}); masks must cover the same field of view as the image. Use masks "
                "made for this image at its original resolution (e.g. CheXmask 'OriginalResolution', not "
                "'Preprocessed')"
            )
        log.info("resizing %s from %dx%d to the radiograph's %dx%d", what, h, w, oh, ow)
        return _resize(x, (oh, ow))

    def apply(self, x: torch.Tensor, what: str = "mask") -> torch.Tensor:
        """Original -> working: resize (..., H0, W0) to the content size and zero-pad to the canvas."""
        x = self.conform(x, what)
        x = _resize(x, self.resized_size)
        top, bottom, left, right = self.pad
        return F.pad(x, (left, right, top, bottom))

    def invert(self, x: torch.Tensor, what: str = "mask") -> torch.Tensor:
        """Working -> original: crop the padding of (..., H, W) and resize back to the original size."""
        if tuple(x.shape[-2:]) != tuple(self.working_size):
            raise GeometryError(
                f"{what} is {tuple(x.shape[-2:])} (H, W) but this geometry's working size is "
                f"{self.working_size}"
            )
        top, _, left, _ = self.pad
        rh, rw = self.resized_size
        return _resize(x[..., top : top + rh, left : left + rw], self.original_size)

    def content_mask(self) -> torch.Tensor:
        """(H, W) 1 on the radiograph's pixels, 0 on the padding."""
        m = torch.zeros(self.working_size)
        top, _, left, _ = self.pad
        rh, rw = self.resized_size
        m[top : top + rh, left : left + rw] = 1.0
        return m

    def describe(self) -> str:
        oh, ow = self.original_size
        h, w = self.working_size
        return f"{oh}x{ow} -> x{self.scale:.4f} -> {self.resized_size[0]}x{self.resized_size[1]} + pad {self.pad} = {h}x{w}"


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (..., h, w) float data to ``size`` (H, W): area averaging when shrinking, bilinear otherwise."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:]).float()  # (N, 1, h, w)
    shrinking = size[0] < x.shape[-2] and size[1] < x.shape[-1]
    if shrinking:
        out = F.interpolate(flat, size=size, mode="area")
    else:
        out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)
