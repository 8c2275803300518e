"""Per-image anatomy-preservation and localisation figures (README.md, "Metrics").

For one grey pair x0 (original), x1 (counterfactual) and a soft target region m:
- every metric of registry.py with a ``measure`` over its region: SSIM map
  averaged (over the interior the map covers), PSNR = 10 log10(1 / MSE) (data
  range 1) or MAE, over the image, outside (weight 1 - m) or inside (weight m);
- SSIM per organ (weight = organ mask);
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

from .registry import METRICS
from .ssim import RADIUS, compute_dtype, crop_to_map, ssim_map, weighted_mean

# region sums below this (in pixels of weight) count as empty
_EMPTY = 1e-6


@dataclass
class PairScores:
    """{metric name: value} of one pair (registry.py names; attribute access reads them too)."""

    values: dict[str, float | None]  # math.inf for the PSNR of identical images
    ssim_organs: dict[str, float | None] = field(default_factory=dict)
    null_reasons: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> float | None:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB; infinite when the images are identical."""
    if mse <= 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


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
    weights = {"image": None, "outside": 1.0 - m, "inside": m}
    empty = {"outside": "target region covers the whole image", "inside": "target region is empty"}
    smap = ssim_map(a, b)  # (H-2r, W-2r)
    ad = (b - a).abs()
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for metric in METRICS:
        if not metric.measure:
            continue
        w = weights[metric.region]
        if w is not None and float(w.sum()) <= _EMPTY:
            values[metric.name], reasons[metric.name] = None, empty[metric.region]
        elif metric.measure == "ssim":
            values[metric.name] = float(smap.mean()) if w is None else _ssim(smap, w)
            if values[metric.name] is None:
                where = "target region" if metric.region == "inside" else "outside of the region"
                reasons[metric.name] = f"{where} lies within the {RADIUS}-pixel border SSIM excludes"
        elif metric.measure == "psnr":
            values[metric.name] = psnr_from_mse(_mean(ad * ad, w))
        else:  # mae
            values[metric.name] = _mean(ad, w)

    total = float(ad.sum())
    if float(m.sum()) <= _EMPTY:
        localisation = None
        reasons["localisation"] = "target region is empty"
    elif total <= 0.0:
        localisation = None
        reasons["localisation"] = "no change: the images are identical"
    else:
        localisation = float((ad * m).sum()) / total

    organ_scores: dict[str, float | None] = {}
    for name, om in (organs or {}).items():
        organ_scores[name] = _ssim(smap, om.to(x1.device, dtype))
        if organ_scores[name] is None:
            reasons[f"ssim_organs.{name}"] = f"organ mask lies within the {RADIUS}-pixel border SSIM excludes"
    values.update(localisation=localisation, region_fraction=float(m.mean()), max_abs_diff=float(ad.max()))
    return PairScores(values, organ_scores, reasons)


def _mean(x: torch.Tensor, weight: torch.Tensor | None) -> float:
    return float(x.mean() if weight is None else (x * weight).sum() / weight.sum())


def _ssim(smap: torch.Tensor, weight: torch.Tensor) -> float | None:
    """The SSIM map averaged with ``weight`` over the interior it covers; None when no weight lies there."""
    w = crop_to_map(weight)
    return float(weighted_mean(smap, w)) if float(w.sum()) > _EMPTY else None
