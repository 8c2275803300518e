"""Spatial priors of the target region, built from organ masks (docs/METHOD.md section 5).

``build_prior`` returns a (B, H, W) map in [0, 1]: a region chosen by
pathology, side (the PATIENT's: on a PA/AP view the patient's left lung is on
the image's right) and zone, sized by the extent e in (0, 1], with a Gaussian
edge of ``feather_px`` pixels, clipped to the thorax. For every pathology the
hard region grows monotonically with e (each is a family of nested sets), so
the prior's area does too.

Regions (per chosen lung L, with bounding box top..bottom of height h and
width W, "medial" toward the midline between the lungs):

- effusion: L below a level that is e*h above the lung base at the medial
  edge and rises as a meniscus, (1 + 0.35 u^2) e h, toward the lateral
  costophrenic angle (u: 0 medial .. 1 lateral).
- pneumothorax: the apical and lateral peripheral band of L: within
  e*W*(1 - t/2) of the lateral pleural edge on each row (t: 0 apex .. 1 base)
  or within e*h/2 of the apical edge on each column.
- consolidation / opacity: the upper, middle or lower third of L by height,
  shrunk to area fraction e around its deepest point (pixels ranked by
  distance to it, normalised by the zone's width and height).
- cardiomegaly: the heart widened by e times its width (e*W/2 on each side,
  row by row), clipped to the thorax. Side is ignored.
- edema: bilateral perihilar regions, the pixels of each lung within e times
  the lung's largest distance from its hilum (the medial edge at 45 % of the
  lung's height). Side is ignored.
- atelectasis: a basal wedge, L within a triangle standing on the lung base:
  height 0.6 e h over the base, half-width (0.25 + 0.35 e) W, centred on the
  lower quarter of L.
- custom: the given MASK, feathered.

Thorax: the ``thorax`` organ if present, else the convex hull of lungs, heart
and mediastinum.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .organ_masks import OrganMasks

log = logging.getLogger("cxr_counterfactual.priors")

PATHOLOGIES: tuple[str, ...] = (
    "effusion", "pneumothorax", "consolidation", "opacity", "cardiomegaly", "edema", "atelectasis", "custom",
)  # fmt: skip
SIDES: tuple[str, ...] = ("right", "left", "bilateral")
ZONES: tuple[str, ...] = ("upper", "middle", "lower")
BILATERAL_ONLY = ("edema",)

_MENISCUS = 0.35
_ATEL_HEIGHT = 0.6
_HILUM_LEVEL = 0.45
_THRESH = 0.5


class PriorError(ValueError):
    """A prior that cannot be built from these inputs, with what to change."""


# ---- public -----------------------------------------------------------------------------------
def build_prior(
    organ_masks: OrganMasks,
    pathology: str,
    side: str = "right",
    extent: float = 0.35,
    feather_px: float = 8.0,
    zone: str = "lower",
    custom_mask: torch.Tensor | None = None,
) -> torch.Tensor:  # (B, H, W) float32 in [0, 1]
    """The feathered target region for ``pathology``; see the module docstring for each region."""
    pathology = pathology.strip().lower()
    if pathology not in PATHOLOGIES:
        raise PriorError(f"pathology must be one of {list(PATHOLOGIES)}, received '{pathology}'")
    if side not in SIDES:
        raise PriorError(f"side must be one of {list(SIDES)} (the patient's side), received '{side}'")
    if zone not in ZONES:
        raise PriorError(f"zone must be one of {list(ZONES)}, received '{zone}'")
    if not (isinstance(extent, (int, float)) and math.isfinite(extent) and 0.0 < extent <= 1.0):
        raise PriorError(f"extent must lie in (0, 1], received {extent}")
    if not (math.isfinite(feather_px) and feather_px >= 0.0):
        raise PriorError(f"feather_px must be >= 0 pixels, received {feather_px}")
    h, w = organ_masks.image_size
    if pathology == "custom":
        region = _custom_region(custom_mask, organ_masks.batch_size, (h, w))
        return feather(region, feather_px)
    binary = organ_masks.masks.detach().cpu() >= _THRESH  # (B, K, H, W)
    items = []
    for b in range(binary.shape[0]):
        organs = {n: binary[b, k].numpy() for k, n in enumerate(organ_masks.names)}
        items.append(_region(organs, organ_masks.names, pathology, side, float(extent), zone, b))
    region = torch.from_numpy(np.stack(items).astype(np.float32))  # (B, H, W)
    thorax = thorax_mask(organ_masks)
    prior = feather(region, feather_px) * thorax
    log.debug(
        "prior %s side=%s zone=%s e=%.2f: area %.2f%%",
        pathology,
        side,
        zone,
        extent,
        100 * float(prior.mean()),
    )
    return prior.clamp(0.0, 1.0).to(organ_masks.masks.device)


def prior_region(
    organ_masks: OrganMasks, pathology: str, side: str, extent: float, zone: str = "lower"
) -> torch.Tensor:
    """The hard (unfeathered, unclipped) region, (B, H, W) in {0, 1}; for tests and diagnostics."""
    if pathology == "custom":
        raise PriorError("the custom prior has no built region; it is the MASK you give")
    binary = organ_masks.masks.detach().cpu() >= _THRESH
    items = [
        _region({n: binary[b, k].numpy() for k, n in enumerate(organ_masks.names)}, organ_masks.names,
                pathology, side, float(extent), zone, b)
        for b in range(binary.shape[0])
    ]  # fmt: skip
    return torch.from_numpy(np.stack(items).astype(np.float32))


def thorax_mask(organ_masks: OrganMasks) -> torch.Tensor:
    """(B, H, W) binary thorax: the ``thorax`` organ, else the convex hull of lungs, heart and mediastinum."""
    m = organ_masks.masks.detach().cpu() >= _THRESH
    if organ_masks.has("thorax"):
        return m[:, organ_masks.index("thorax")].float()
    parts = [
        organ_masks.index(n)
        for n in ("right_lung", "left_lung", "heart", "mediastinum")
        if organ_masks.has(n)
    ]
    if not parts:
        raise PriorError(
            f"priors need lungs (or a 'thorax' organ) in ORGAN_MASKS; received {list(organ_masks.names)}"
        )
    out = []
    for b in range(m.shape[0]):
        union = m[b, parts].any(dim=0).numpy().astype(np.uint8)
        hull = np.zeros_like(union)
        pts = cv2.findNonZero(union)
        if pts is not None:
            cv2.fillConvexPoly(hull, cv2.convexHull(pts), 1)
        out.append(hull | union)
    return torch.from_numpy(np.stack(out).astype(np.float32))


def feather(region: torch.Tensor, feather_px: float) -> torch.Tensor:
    """Gaussian edge: blur (B, H, W) with sigma ``feather_px`` (0 = unchanged)."""
    if feather_px <= 0:
        return region.float()
    sigma = float(feather_px)
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = region.float().unsqueeze(1)  # (B, 1, H, W)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0)), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius)), k.view(1, 1, -1, 1))
    return x.squeeze(1).clamp(0.0, 1.0)


# ---- per image --------------------------------------------------------------------------------
def _region(
    organs: dict[str, np.ndarray],
    names: tuple[str, ...],
    pathology: str,
    side: str,
    e: float,
    zone: str,
    b: int,
) -> np.ndarray:  # (H, W) bool
    if pathology == "cardiomegaly":
        return _cardiomegaly(_need(organs, names, "heart", b), e)
    sides = ("right", "left") if side == "bilateral" or pathology in BILATERAL_ONLY else (side,)
    mid = _midline(organs)
    out = None
    for s in sides:
        lung = _need(organs, names, f"{s}_lung", b, side=s)
        geo = _LungFrame(lung, s, mid)
        if pathology == "effusion":
            r = _effusion(geo, e)
        elif pathology == "pneumothorax":
            r = _pneumothorax(geo, e)
        elif pathology in ("consolidation", "opacity"):
            r = _zone_blob(geo, zone, e)
        elif pathology == "edema":
            r = _perihilar(geo, e)
        else:
            r = _basal_wedge(geo, e)
        out = r if out is None else out | r
    return out


def _need(
    organs: dict[str, np.ndarray], names: tuple[str, ...], organ: str, b: int, side: str | None = None
) -> np.ndarray:
    if organ not in organs:
        raise PriorError(
            f"this prior needs '{organ}' in ORGAN_MASKS, which has {list(names)}; add it (e.g. with "
            "OrganMaskLoader) or choose another side/pathology"
        )
    m = organs[organ]
    if not m.any():
        who = f"the patient's {side} lung" if side else f"'{organ}'"
        raise PriorError(
            f"{who} mask is empty after thresholding at {_THRESH} (batch item {b}); the prior for side "
            f"'{side or '-'}' cannot be built. Check the segmentation, or choose the other side"
        )
    return m


def _centroid_x(m: np.ndarray) -> float:
    return float(np.nonzero(m)[1].mean())


def _midline(organs: dict[str, np.ndarray]) -> float | None:
    right, left = organs.get("right_lung"), organs.get("left_lung")
    if right is not None and left is not None and right.any() and left.any():
        return 0.5 * (_centroid_x(right) + _centroid_x(left))
    for name in ("mediastinum", "heart", "trachea", "spine"):
        m = organs.get(name)
        if m is not None and m.any():
            return _centroid_x(m)
    return None


class _LungFrame:
    """One lung's box and its lateral direction (+1: lateral is toward larger x)."""

    def __init__(self, lung: np.ndarray, side: str, midline: float | None) -> None:
        self.m = lung
        ys, xs = np.nonzero(lung)
        self.top, self.bottom = int(ys.min()), int(ys.max())
        self.left, self.right = int(xs.min()), int(xs.max())
        self.h = self.bottom - self.top + 1
        self.w = self.right - self.left + 1
        cx = float(xs.mean())
        if midline is None:
            midline = lung.shape[1] / 2.0
        # on a PA/AP view the patient's right lung is on the image's left
        self.lat = (1 if cx > midline else -1) if abs(cx - midline) > 1e-6 else (-1 if side == "right" else 1)
        self.x_lat = self.right if self.lat > 0 else self.left
        self.x_med = self.left if self.lat > 0 else self.right
        hh, ww = lung.shape
        self.yy, self.xx = np.mgrid[0:hh, 0:ww].astype(np.float32)

    def lateral_u(self) -> np.ndarray:
        """0 at the medial edge of the box, 1 at the lateral edge."""
        span = float(self.x_lat - self.x_med)  # negative when lateral is toward smaller x
        return np.clip((self.xx - self.x_med) / (span if abs(span) >= 1.0 else 1.0), 0.0, 1.0)

    def hilum(self) -> tuple[float, float]:
        y = int(round(self.top + _HILUM_LEVEL * (self.h - 1)))
        rows = np.flatnonzero(self.m.any(axis=1))
        y = int(rows[np.abs(rows - y).argmin()])
        xs = np.flatnonzero(self.m[y])
        return float(xs.min() if self.lat > 0 else xs.max()), float(y)


def _effusion(g: _LungFrame, e: float) -> np.ndarray:
    rise = e * g.h * (1.0 + _MENISCUS * g.lateral_u() ** 2)  # height of the fluid above the base
    return g.m & (g.yy >= g.bottom + 1 - rise)


def _pneumothorax(g: _LungFrame, e: float) -> np.ndarray:
    m = g.m
    hh, ww = m.shape
    rows = m.any(axis=1)
    # lateral pleural edge per row
    if g.lat > 0:
        edge = np.where(rows, ww - 1 - np.argmax(m[:, ::-1], axis=1), -1)
    else:
        edge = np.where(rows, np.argmax(m, axis=1), -1)
    t = np.clip((np.arange(hh) - g.top) / max(1.0, g.h - 1.0), 0.0, 1.0)
    width = e * g.w * (1.0 - 0.5 * t)  # (H,)
    lateral = rows[:, None] & (np.abs(g.xx - edge[:, None]) <= width[:, None])
    # apical edge per column
    cols = m.any(axis=0)
    top = np.where(cols, np.argmax(m, axis=0), hh)
    apical = cols[None, :] & (g.yy - top[None, :] <= 0.5 * e * g.h)
    return m & (lateral | apical)


def _zone_blob(g: _LungFrame, zone: str, e: float) -> np.ndarray:
    third = ZONES.index(zone)
    y0 = g.top + third * g.h / 3.0
    y1 = g.top + (third + 1) * g.h / 3.0
    z = g.m & (g.yy >= y0) & (g.yy < y1)
    if not z.any():
        raise PriorError(f"the {zone} third of the lung is empty; choose another zone")
    dist = cv2.distanceTransform(z.astype(np.uint8), cv2.DIST_L2, 5)
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    ys, xs = np.nonzero(z)
    zh, zw = max(1, ys.max() - ys.min() + 1), max(1, xs.max() - xs.min() + 1)
    d = ((ys - cy) / zh) ** 2 + ((xs - cx) / zw) ** 2
    keep = int(math.ceil(e * len(ys)))
    order = np.argsort(d, kind="stable")[:keep]
    out = np.zeros_like(z)
    out[ys[order], xs[order]] = True
    return out


def _perihilar(g: _LungFrame, e: float) -> np.ndarray:
    hx, hy = g.hilum()
    d = np.hypot(g.xx - hx, g.yy - hy)  # isotropic: a perihilar fan, not a vertical strip
    dmax = float(d[g.m].max())
    return g.m & (d <= e * dmax)


def _basal_wedge(g: _LungFrame, e: float) -> np.ndarray:
    m = g.m
    hh = m.shape[0]
    low = m & (g.yy >= g.bottom - 0.25 * g.h)
    xc = float(np.nonzero(low)[1].mean())
    cols = m.any(axis=0)
    base = np.where(cols, hh - 1 - np.argmax(m[::-1, :], axis=0), -1)  # lowest lung row per column
    half = (0.25 + 0.35 * e) * g.w
    profile = np.clip(1.0 - np.abs(np.arange(m.shape[1]) - xc) / half, 0.0, None)  # (W,)
    height = _ATEL_HEIGHT * e * g.h * profile
    return m & cols[None, :] & (profile[None, :] > 0) & (base[None, :] - g.yy <= height[None, :])


def _cardiomegaly(heart: np.ndarray, e: float) -> np.ndarray:
    xs = np.nonzero(heart)[1]
    width = xs.max() - xs.min() + 1
    r = int(round(e * width / 2.0))
    out = heart.astype(np.uint8)
    if r > 0:
        out = cv2.dilate(out, np.ones((1, 2 * r + 1), np.uint8))
    return out.astype(bool)


def _custom_region(mask: torch.Tensor | None, batch: int, size: tuple[int, int]) -> torch.Tensor:
    if mask is None:
        raise PriorError("pathology 'custom' needs a custom_mask (a MASK at the image's size)")
    m = mask.detach().float().cpu()
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if m.ndim != 3 or tuple(m.shape[-2:]) != tuple(size):
        raise PriorError(
            f"custom_mask must be (B, H, W) with (H, W) = {tuple(size)}, received {tuple(mask.shape)}"
        )
    if not torch.isfinite(m).all() or float(m.min()) < -1e-4 or float(m.max()) > 1 + 1e-4:
        raise PriorError("custom_mask must be finite and within [0, 1]")
    if float(m.max()) <= 0:
        raise PriorError("custom_mask is empty (all zero); draw the target region")
    if m.shape[0] == 1 and batch > 1:
        m = m.expand(batch, -1, -1)
    return m.clamp(0, 1)
