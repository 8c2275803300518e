"""Synthetic chest masks for the input-node tests: a PA view, patient's right lung on the image's left."""

from __future__ import annotations

import numpy as np
import torch


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def synthetic_chest(h: int = 120, w: int = 100) -> dict[str, np.ndarray]:
    """Bool masks of a PA chest: right lung on the image's LEFT, left lung on the image's RIGHT."""
    right = ellipse(h, w, 0.48 * h, 0.28 * w, 0.36 * h, 0.17 * w)
    left = ellipse(h, w, 0.48 * h, 0.72 * w, 0.36 * h, 0.17 * w)
    heart = ellipse(h, w, 0.70 * h, 0.55 * w, 0.13 * h, 0.16 * w) & ~right & ~left
    med = np.zeros((h, w), bool)
    med[int(0.1 * h) : int(0.57 * h), int(0.45 * w) : int(0.55 * w)] = True
    med &= ~right & ~left & ~heart
    return {"right_lung": right, "left_lung": left, "heart": heart, "mediastinum": med}


def synthetic_organ_masks(h: int = 120, w: int = 100, batch: int = 1):
    from cxr_pack.cxr_core.organ_masks import OrganMasks

    organs = synthetic_chest(h, w)
    names = tuple(organs)
    m = torch.from_numpy(np.stack([organs[n] for n in names]).astype(np.float32))
    return OrganMasks(
        names=names, masks=m.expand(batch, -1, -1, -1).clone(), image_size=(h, w), scheme="synthetic"
    )


def label_map(organs: dict[str, np.ndarray], values: dict[str, int]) -> np.ndarray:
    out = np.zeros(next(iter(organs.values())).shape, np.uint8)
    for name, v in values.items():
        out[organs[name]] = v
    return out
