"""Input checks and conversions shared by the metrics.

ComfyUI images are (B, H, W, C) floats in [0, 1]; masks are (B, H, W) or (H, W).
Metrics compare grey images: one channel is taken as grey, RGB(A) is reduced to
luminance with scikit-image's ``rgb2gray`` weights, alpha is dropped. When
R = G = B, as in radiographs, the channel itself is taken, so a 1-channel and an
RGB copy of one image compare as identical.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("cxr_counterfactual.metrics.prep")

# skimage.color.rgb2gray (ITU-R BT.709 luma)
_LUMA = (0.2125, 0.7154, 0.0721)
# values this far outside [0, 1] mean the image is not a ComfyUI IMAGE (e.g. 0..255)
_RANGE_TOL = 1e-3


class MetricInputError(ValueError):
    """An input the metrics cannot use; the message names the input, what was expected and received."""


def check_image(image: torch.Tensor, name: str) -> torch.Tensor:
    """Validate a ComfyUI IMAGE and return it as (B, H, W, C) float."""
    if not isinstance(image, torch.Tensor):
        raise MetricInputError(f"{name}: expected an IMAGE tensor, received {type(image).__name__}")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 2, 3, 4):
        raise MetricInputError(
            f"{name}: expected an IMAGE shaped (B, H, W, C) with C in 1..4, received {tuple(image.shape)}"
        )
    if image.shape[0] == 0:
        raise MetricInputError(f"{name}: the batch is empty")
    image = image.float()
    finite = torch.isfinite(image)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise MetricInputError(
            f"{name}: contains {bad} NaN/Inf value(s); expected finite values in [0, 1]. "
            "Fix the node that produced it (a diverged sampler or a VAE decode in fp16 often does this)"
        )
    lo, hi = float(image.min()), float(image.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise MetricInputError(
            f"{name}: expected values in [0, 1], received range [{lo:.4g}, {hi:.4g}]; "
            "rescale it (e.g. divide 0..255 by 255) before the metrics"
        )
    return image.clamp(0.0, 1.0)


def to_grey(image: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) in [0, 1] -> (B, H, W) grey; exactly the channel when R = G = B."""
    c = image.shape[-1]
    if c in (1, 2):  # grey, grey + alpha
        return image[..., 0]
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    if torch.equal(r, g) and torch.equal(g, b):  # a grey radiograph as RGB: no rounding noise
        return r
    w = torch.tensor(_LUMA, dtype=image.dtype, device=image.device)
    return image[..., :3] @ w


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, H, W, 3): grey is repeated, alpha dropped (what CLIP and Inception take)."""
    c = image.shape[-1]
    if c in (1, 2):
        return image[..., :1].expand(*image.shape[:-1], 3).contiguous()
    return image[..., :3]


def pair_images(original: torch.Tensor, counterfactual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check an (original, counterfactual) pair; broadcast a single original over a batch.

    Returns both as (N, H, W, C) on the counterfactual's device. Channel counts may
    differ (1-channel against RGB): every metric compares grey images.
    """
    x0 = check_image(original, "original")
    x1 = check_image(counterfactual, "counterfactual")
    if x0.shape[1:3] != x1.shape[1:3]:
        raise MetricInputError(
            f"original and counterfactual: sizes differ, original is {tuple(x0.shape[1:3])} (H, W), "
            f"counterfactual is {tuple(x1.shape[1:3])}; expected the same size. Resize one of them "
            "(e.g. ImageScale) or compare at the size the counterfactual was generated"
        )
    b0, b1 = x0.shape[0], x1.shape[0]
    if b0 != b1 and b0 != 1:
        raise MetricInputError(
            f"original and counterfactual: batch sizes {b0} and {b1}; expected equal sizes, "
            "or one original for a batch of counterfactuals"
        )
    n = max(b0, b1)
    if x0.shape[-1] != x1.shape[-1]:
        log.info(
            "comparing a %d-channel original with a %d-channel counterfactual as grey",
            x0.shape[-1],
            x1.shape[-1],
        )
    x0 = x0.to(x1.device)
    return x0.expand(n, -1, -1, -1), x1.expand(n, -1, -1, -1)


def check_mask(mask: torch.Tensor, name: str, size: tuple[int, int], batch: int) -> torch.Tensor:
    """A MASK (H, W) or (B, H, W) at image resolution -> (batch, H, W) float in [0, 1]."""
    if not isinstance(mask, torch.Tensor):
        raise MetricInputError(f"{name}: expected a MASK tensor, received {type(mask).__name__}")
    m = mask.unsqueeze(0) if mask.ndim == 2 else mask
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 3:
        raise MetricInputError(
            f"{name}: expected a MASK shaped (H, W) or (B, H, W), received {tuple(mask.shape)}"
        )
    if tuple(m.shape[-2:]) != tuple(size):
        raise MetricInputError(
            f"{name}: mask is {tuple(m.shape[-2:])} (H, W) but the images are {tuple(size)}; "
            "expected a mask at image resolution (resize it with the image)"
        )
    if m.shape[0] not in (1, batch):
        raise MetricInputError(
            f"{name}: batch of {m.shape[0]} masks for {batch} images; expected 1 or {batch}"
        )
    m = m.float()
    if not bool(torch.isfinite(m).all()):
        raise MetricInputError(f"{name}: contains NaN/Inf values; expected a mask in [0, 1]")
    lo, hi = float(m.min()), float(m.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise MetricInputError(f"{name}: expected values in [0, 1], received range [{lo:.4g}, {hi:.4g}]")
    return m.clamp(0.0, 1.0).expand(batch, -1, -1)
