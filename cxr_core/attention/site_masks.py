"""Map image-resolution masks to an attention site's token grid (docs/METHOD.md, "Organ memberships").

One helper serves every module: area-average a (B, ..., H, W) mask onto the
site's (h, w) grid and flatten it row-major, the order in which a
SpatialTransformer lays out its tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..mask_aspect import check_mask_aspect


def mask_to_site(mask: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Area-average masks onto an (h, w) token grid.

    mask: (H, W), (B, H, W) or (B, K, H, W) in [0, 1].
    Returns (B, N) for 2-D/3-D input or (B, K, N) for 4-D input, N = h * w.
    Works for any H, W and h, w (non-square, not multiples of 64): each token
    gets the mean of the image area it covers (adaptive average pooling).
    """
    if mask.ndim not in (2, 3, 4):
        raise ValueError(
            f"mask_to_site: mask must be (H, W), (B, H, W) or (B, K, H, W), received {tuple(mask.shape)}"
        )
    h, w = int(hw[0]), int(hw[1])
    check_mask_aspect(tuple(mask.shape[-2:]), (h, w))
    squeeze_k = mask.ndim < 4
    m = mask.reshape(1, 1, *mask.shape) if mask.ndim == 2 else mask.unsqueeze(1) if mask.ndim == 3 else mask
    m = m.float()
    if tuple(m.shape[-2:]) == (h, w):
        pooled = m
    else:
        pooled = F.adaptive_avg_pool2d(m, (h, w))
    out = pooled.flatten(2)  # (B, K, N)
    return out[:, 0] if squeeze_k else out


def latent_site_hw(extra_options: dict) -> tuple[int, int]:
    """(h, w) of the site currently running, from ComfyUI's ``activations_shape``."""
    shape = extra_options.get("activations_shape")
    if shape is None or len(shape) < 4:
        raise ValueError(
            "attention patch: extra_options has no activations_shape; ComfyUI >= 0.3.75 is required"
        )
    return int(shape[-2]), int(shape[-1])


def match_batch(t: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Broadcast a per-item tensor (first dim 1 or ``batch``) to ``batch`` items."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] == 1:
        return t.expand(batch, *t.shape[1:])
    raise ValueError(
        f"{what}: {t.shape[0]} mask sets for a batch of {batch}; give one set (broadcast to all) "
        "or exactly one per batch item"
    )
