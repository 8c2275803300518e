"""Refuse masks whose aspect ratio differs from the grid they are mapped onto.

Resizing a mask to another resolution of the same picture is harmless; resizing
it to another *shape* stretches the anatomy, so the gate and the prior would
fall on the wrong tokens without any sign of it. A token grid of a UNet site is
the latent halved (rounded up) a few times, so a mask of the right shape
predicts each side of the grid to within one token.
"""

from __future__ import annotations


class MaskAspectError(ValueError):
    """Masks made for an image of another shape than the latent being sampled."""


def check_mask_aspect(
    mask_hw: tuple[int, int], grid_hw: tuple[int, int], what: str = "attention masks"
) -> None:
    """Raise :class:`MaskAspectError` when (H, W) masks cannot cover an (h, w) grid without stretching."""
    mh, mw = int(mask_hw[0]), int(mask_hw[1])
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    if min(mh, mw, gh, gw) <= 0:
        return
    off_w = abs(mw * gh / mh - gw)  # grid width the masks' aspect predicts, minus the real one
    off_h = abs(mh * gw / mw - gh)
    if (off_w >= 1.0 and off_w > 0.01 * gw) or (off_h >= 1.0 and off_h > 0.01 * gh):
        raise MaskAspectError(
            f"{what}: the masks are {mh}x{mw} (H x W, aspect {mh / mw:.3f}) but the latent being sampled has an "
            f"attention grid of {gh}x{gw} (aspect {gh / gw:.3f}); masks made for an image of another shape would "
            "be stretched onto the wrong anatomy. Make the latent from the same image as the masks (VAEEncode of "
            "CXRImageLoader's IMAGE, or an empty latent of that image's width and height)"
        )
