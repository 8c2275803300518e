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


def draw_legend(
    preview: torch.Tensor, names: tuple[str, ...], colours: list[tuple[float, float, float]]
) -> torch.Tensor:
    """(B, H, W, 3) copy of ``preview`` with a colour legend (swatch + name per entry) in the top-left corner.

    Sizes follow the image height, so the legend stays readable from 128 px to 2048 px previews.
    """
    import cv2
    import numpy as np

    if not names:
        return preview
    b, h, w, _ = preview.shape
    scale = max(0.3, h / 900)
    line = max(10, int(round(26 * scale)))
    thick = max(1, int(round(scale * 1.5)))
    pad = max(3, line // 4)
    widths = [cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for n in names]
    box_w = min(w, pad * 3 + line + max(widths))
    box_h = min(h, pad * 2 + line * len(names))
    out = preview.detach().cpu().float().clone()
    for i in range(b):  # only the legend's box is redrawn (8-bit); the rest of the preview is left exact
        box = out[i, :box_h, :box_w].clamp(0, 1).numpy()
        img = np.ascontiguousarray((box * 255 * 0.35).astype(np.uint8))  # darkened behind the legend
        for k, (name, col) in enumerate(zip(names, colours, strict=True)):
            y = pad + k * line
            rgb = tuple(int(round(c * 255)) for c in col)
            cv2.rectangle(img, (pad, y + 2), (pad + line - 4, y + line - 2), rgb, thickness=-1)
            cv2.putText(img, name, (pad * 2 + line - 4, y + line - 4 - line // 6), cv2.FONT_HERSHEY_SIMPLEX,
                        scale, (255, 255, 255), thick, cv2.LINE_AA)  # fmt: skip
        out[i, :box_h, :box_w] = torch.from_numpy(img.astype(np.float32) / 255.0)
    return out


def organ_preview(image: torch.Tensor | None, names: tuple[str, ...], masks: torch.Tensor) -> torch.Tensor:
    """Organs in colour over the image, with a legend of the organs found (non-empty in some image)."""
    preview = overlay_organs(image, names, masks)
    found = [k for k in range(masks.shape[1]) if bool((masks[:, k] > 0).any())]
    return draw_legend(preview, tuple(names[k] for k in found), [organ_colour(names[k]) for k in found])
