"""Preview images: organ masks (or a prior) drawn in colour over a grey radiograph."""

from __future__ import annotations

import hashlib

import torch

ORGAN_COLOURS: dict[str, tuple[float, float, float]] = {
    "right_lung": (0.20, 0.55, 1.00),
    "left_lung": (0.10, 0.85, 0.35),
    "heart": (1.00, 0.25, 0.25),
    "mediastinum": (1.00, 0.80, 0.10),
    "trachea": (0.75, 0.35, 1.00),
    "aorta": (1.00, 0.50, 0.00),
    "spine": (0.60, 0.60, 0.60),
    "thorax": (0.40, 0.90, 0.90),
}
PRIOR_COLOUR = (1.00, 0.15, 0.10)


def organ_colour(name: str) -> tuple[float, float, float]:
    """A fixed colour per canonical organ; other names get a stable colour from their hash."""
    if name in ORGAN_COLOURS:
        return ORGAN_COLOURS[name]
    h = hashlib.sha256(name.encode()).digest()
    return (0.3 + 0.7 * h[0] / 255, 0.3 + 0.7 * h[1] / 255, 0.3 + 0.7 * h[2] / 255)


def grey_to_rgb(image: torch.Tensor | None, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) IMAGE or None -> (B, H, W, 3) float base for drawing (dark grey if None)."""
    if image is None:
        return torch.full((batch, *size, 3), 0.15)
    img = image.float()
    if img.shape[-1] == 1:
        img = img.expand(*img.shape[:-1], 3)
    img = img[..., :3]
    if img.shape[0] == 1 and batch > 1:
        img = img.expand(batch, -1, -1, -1)
    return img.clone()


def overlay_masks(
    image: torch.Tensor | None,
    masks: torch.Tensor,  # (B, K, H, W) in [0, 1]
    colours: list[tuple[float, float, float]],
    alpha: float = 0.45,
) -> torch.Tensor:
    """(B, H, W, 3) preview: each mask tints the image with its colour, drawn in order."""
    b, k, h, w = masks.shape
    base = grey_to_rgb(image, b, (h, w))
    if tuple(base.shape[1:3]) != (h, w):
        raise ValueError(f"preview: image is {tuple(base.shape[1:3])} but masks are {(h, w)} (H, W)")
    out = base
    for i in range(k):
        a = (alpha * masks[:, i].float()).unsqueeze(-1)  # (B, H, W, 1)
        col = torch.tensor(colours[i], dtype=out.dtype).view(1, 1, 1, 3)
        out = out * (1 - a) + col * a
    return out.clamp(0, 1)


def overlay_organs(image: torch.Tensor | None, names: tuple[str, ...], masks: torch.Tensor) -> torch.Tensor:
    return overlay_masks(image, masks, [organ_colour(n) for n in names])
