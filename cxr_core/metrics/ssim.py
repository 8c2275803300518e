"""SSIM in torch, equal to scikit-image's reference settings (README.md, "Metrics").

``structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)``: an 11-tap Gaussian window
(sigma 1.5, truncated at 3.5 sigma, radius 5), K1 = 0.01, K2 = 0.03,

    S = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),

with C1 = (K1 L)^2, C2 = (K2 L)^2, L = 1. scikit-image filters with reflected
borders and then drops a border of ``radius`` pixels before averaging; the pixels
it keeps depend only on pixels inside the image, so this module filters without
padding ("valid") and gets the same map over the same pixels. Every region mean
(outside, inside, per organ) is taken over that same interior.

Computed in float64 where the device supports it (float32 on Apple MPS), since
s^2 = E[x^2] - E[x]^2 cancels badly in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIGMA = 1.5
TRUNCATE = 3.5
K1, K2 = 0.01, 0.03
RADIUS = int(TRUNCATE * SIGMA + 0.5)  # 5, as scipy.ndimage computes it
WIN = 2 * RADIUS + 1  # 11


def compute_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def gaussian_taps(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The normalised 1-D Gaussian window of scipy.ndimage.gaussian_filter, (WIN,)."""
    x = torch.arange(-RADIUS, RADIUS + 1, device=device, dtype=dtype)
    w = torch.exp(-0.5 * (x / SIGMA) ** 2)
    return w / w.sum()


def _filter_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter without padding: (N, 1, H, W) -> (N, 1, H-2r, W-2r)."""
    x = F.conv2d(x, taps.view(1, 1, 1, -1))
    return F.conv2d(x, taps.view(1, 1, -1, 1))


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM map of grey images (..., H, W) -> (..., H - 10, W - 10) over the interior scikit-image averages."""
    if x.shape != y.shape:
        raise ValueError(f"ssim_map: shapes differ, {tuple(x.shape)} and {tuple(y.shape)}")
    h, w = x.shape[-2:]
    if h < WIN or w < WIN:
        raise ValueError(
            f"ssim: images must be at least {WIN}x{WIN} pixels (the SSIM window), received {h}x{w}"
        )
    lead = x.shape[:-2]
    dtype = compute_dtype(x.device)
    taps = gaussian_taps(x.device, dtype)
    a = x.reshape(-1, 1, h, w).to(dtype)
    b = y.reshape(-1, 1, h, w).to(dtype)
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1)  # (N, 5, H, W)
    n = stack.shape[0]
    f = _filter_valid(stack.reshape(-1, 1, h, w), taps).reshape(n, 5, h - 2 * RADIUS, w - 2 * RADIUS)
    ux, uy, uxx, uyy, uxy = f.unbind(dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(*lead, h - 2 * RADIUS, w - 2 * RADIUS)


def crop_to_map(t: torch.Tensor) -> torch.Tensor:
    """Crop a (..., H, W) mask or image to the pixels the SSIM map covers."""
    return t[..., RADIUS:-RADIUS, RADIUS:-RADIUS]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image, (..., H, W) -> (...); equals scikit-image's value."""
    return ssim_map(x, y, data_range).flatten(-2).mean(-1)


def weighted_mean(value_map: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """Weighted mean of a map over a soft region; None when the region has no weight there."""
    total = weight.sum()
    if float(total) <= 0.0:
        return None
    return (value_map * weight.to(value_map.dtype)).sum() / total.to(value_map.dtype)
