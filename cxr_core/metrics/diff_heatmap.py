"""The difference figure: |x1 - x0| as a heat map over the dimmed original, with contours.

Heat is |x1 - x0| divided by its per-image maximum (the scale is reported as
``max_abs_diff``), coloured with an inferno-like ramp and laid over 40 % of the
original. The target region's outline is cyan; organ outlines take the palette
below in the order of the ORGAN_MASKS names. Outlines are drawn at mask >= 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# inferno anchors at 0, .25, .5, .75, 1
_RAMP = ((0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164))
REGION_COLOUR = (0.0, 1.0, 1.0)
ORGAN_PALETTE = (
    (0.3, 1.0, 0.3),
    (1.0, 0.35, 1.0),
    (1.0, 1.0, 1.0),
    (0.35, 0.55, 1.0),
    (1.0, 0.6, 0.2),
    (0.7, 0.7, 0.7),
)
_UNDERLAY = 0.4


def colour_ramp(t: torch.Tensor) -> torch.Tensor:
    """(H, W) in [0, 1] -> (H, W, 3) inferno-like colours."""
    ramp = torch.tensor(_RAMP, dtype=torch.float32, device=t.device) / 255.0  # (5, 3)
    pos = t.clamp(0, 1).float() * (ramp.shape[0] - 1)
    lo = pos.floor().long().clamp(max=ramp.shape[0] - 2)
    frac = (pos - lo.float()).unsqueeze(-1)
    return ramp[lo] * (1 - frac) + ramp[lo + 1] * frac


def outline(mask: torch.Tensor, thickness: int = 1) -> torch.Tensor:
    """Boolean (H, W) outline of mask >= 0.5, ``thickness`` pixels wide (inside the edge and out)."""
    inside = (mask >= 0.5).float()[None, None]
    eroded = -F.max_pool2d(-inside, 3, stride=1, padding=1)
    edge = (inside - eroded).clamp(min=0)
    if thickness > 1:
        edge = F.max_pool2d(edge, 2 * thickness - 1, stride=1, padding=thickness - 1)
    return edge[0, 0] > 0


def difference_figure(
    x0: torch.Tensor,
    x1: torch.Tensor,
    region: torch.Tensor,
    organs: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Grey pair (H, W), region (H, W), organs {name: (H, W)} -> IMAGE (H, W, 3) float in [0, 1]."""
    d = (x1.float() - x0.float().to(x1.device)).abs()
    peak = float(d.max())
    heat = colour_ramp(d / peak if peak > 0 else d)
    grey = x0.float().to(x1.device).unsqueeze(-1).expand(-1, -1, 3)
    fig = _UNDERLAY * grey + (1 - _UNDERLAY) * heat
    h, w = d.shape
    thickness = max(1, round(min(h, w) / 256))
    for k, om in enumerate((organs or {}).values()):
        colour = torch.tensor(ORGAN_PALETTE[k % len(ORGAN_PALETTE)], device=fig.device)
        fig = torch.where(outline(om.to(fig.device), thickness).unsqueeze(-1), colour, fig)
    region_colour = torch.tensor(REGION_COLOUR, device=fig.device)
    fig = torch.where(outline(region.to(fig.device), thickness).unsqueeze(-1), region_colour, fig)
    return fig.clamp(0, 1)
