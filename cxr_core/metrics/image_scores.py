"""Per-image anatomy-preservation and localisation figures (README.md, "Metrics").

For one grey pair x0 (original), x1 (counterfactual) and a soft target region m:
- SSIM map averaged globally, outside (weight 1 - m), inside (weight m) and per
  organ (weight = organ mask), all over the interior the SSIM map covers;
- PSNR = 10 log10(1 / MSE) (data range 1) and MAE, globally and outside;
- edit localisation = sum(m |x1 - x0|) / sum(|x1 - x0|).

A figure that does not exist is None with a reason in ``null_reasons``: an empty
region has no inside, a full region no outside, identical images no change to
localise. Identical images have PSNR infinity (``math.inf`` here; the report
layer makes it JSON-safe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .ssim import RADIUS, compute_dtype, crop_to_map, ssim_map, weighted_mean

# region sums below this (in pixels of weight) count as empty
_EMPTY = 1e-6


@dataclass
class PairScores:
    ssim_global: float
    ssim_outside: float | None
    ssim_inside: float | None
    psnr_global_db: float | None  # math.inf for identical images
    psnr_outside_db: float | None
    mae_global: float
    mae_outside: float | None
    mae_inside: float | None
    localisation: float | None
    region_fraction: float
    max_abs_diff: float
    ssim_organs: dict[str, float | None] = field(default_factory=dict)
    null_reasons: dict[str, str] = field(default_factory=dict)


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB; infinite when the images are identical."""
    if mse <= 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def _opt(t: torch.Tensor | None) -> float | None:
    return None if t is None else float(t)


def pair_scores(
    x0: torch.Tensor,
    x1: torch.Tensor,
    region: torch.Tensor,
    organs: dict[str, torch.Tensor] | None = None,
) -> PairScores:
    """Scores of one grey pair (H, W) with a soft region (H, W) and optional organ masks {name: (H, W)}."""
    dtype = compute_dtype(x1.device)
    a, b = x0.to(x1.device, dtype), x1.to(dtype)
    m = region.to(x1.device, dtype)
    inv = 1.0 - m
    reasons: dict[str, str] = {}
    region_px = float(m.sum())
    outside_px = float(inv.sum())

    smap = ssim_map(a, b)  # (H-2r, W-2r)
    m_c, inv_c = crop_to_map(m), crop_to_map(inv)
    ssim_global = float(smap.mean())
    ssim_outside = weighted_mean(smap, inv_c) if float(inv_c.sum()) > _EMPTY else None
    ssim_inside = weighted_mean(smap, m_c) if float(m_c.sum()) > _EMPTY else None
    if region_px <= _EMPTY:
        reasons["ssim_inside"] = "target region is empty"
    elif ssim_inside is None:
        reasons["ssim_inside"] = f"target region lies within the {RADIUS}-pixel border SSIM excludes"
    if outside_px <= _EMPTY:
        reasons["ssim_outside"] = "target region covers the whole image"
    elif ssim_outside is None:
        reasons["ssim_outside"] = f"outside of the region lies within the {RADIUS}-pixel border SSIM excludes"

    d = b - a
    ad = d.abs()
    sq = d * d
    mse = float(sq.mean())
    mae_global = float(ad.mean())
    if outside_px > _EMPTY:
        mse_out = float((sq * inv).sum() / inv.sum())
        mae_outside = float((ad * inv).sum() / inv.sum())
        psnr_outside = psnr_from_mse(mse_out)
    else:
        mae_outside = psnr_outside = None
        reasons["mae_outside"] = reasons["psnr_outside_db"] = "target region covers the whole image"
    if region_px > _EMPTY:
        mae_inside = float((ad * m).sum() / m.sum())
    else:
        mae_inside = None
        reasons["mae_inside"] = "target region is empty"

    total = float(ad.sum())
    if region_px <= _EMPTY:
        localisation = None
        reasons["localisation"] = "target region is empty"
    elif total <= 0.0:
        localisation = None
        reasons["localisation"] = "no change: the images are identical"
    else:
        localisation = float((ad * m).sum()) / total

    organ_scores: dict[str, float | None] = {}
    for name, om in (organs or {}).items():
        w = crop_to_map(om.to(x1.device, dtype))
        value = weighted_mean(smap, w) if float(w.sum()) > _EMPTY else None
        organ_scores[name] = _opt(value)
        if value is None:
            reasons[f"ssim_organs.{name}"] = f"organ mask lies within the {RADIUS}-pixel border SSIM excludes"

    return PairScores(
        ssim_global=ssim_global,
        ssim_outside=_opt(ssim_outside),
        ssim_inside=_opt(ssim_inside),
        psnr_global_db=psnr_from_mse(mse),
        psnr_outside_db=psnr_outside,
        mae_global=mae_global,
        mae_outside=mae_outside,
        mae_inside=mae_inside,
        localisation=localisation,
        region_fraction=float(m.mean()),
        max_abs_diff=float(ad.max()),
        ssim_organs=organ_scores,
        null_reasons=reasons,
    )
