"""The ORGAN_MASKS value: named soft organ masks at image resolution.

One small immutable record travels on the ``ORGAN_MASKS`` socket between the
mask loaders, the attention nodes and the metrics. Masks are soft, in [0, 1],
shaped (B, K, H, W): B is 1 (one set broadcast to every batch item) or the
batch size (one set per item); K follows ``names``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from .organ_names import normalise_organ_name

_RANGE_TOL = 1e-4


class OrganMaskError(ValueError):
    """Organ masks that cannot be used, with a message that says how to fix them."""


@dataclass(frozen=True)
class OrganMasks:
    names: tuple[str, ...]
    masks: torch.Tensor  # (B, K, H, W) float32 in [0, 1]
    image_size: tuple[int, int]  # (H, W) of the image the masks belong to
    scheme: str = "custom"  # the label scheme they came from (cxas, chestx-det, chexmask, ...)
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        names = tuple(normalise_organ_name(n) for n in self.names)
        object.__setattr__(self, "names", names)
        m = self.masks
        if not isinstance(m, torch.Tensor):
            raise OrganMaskError(f"ORGAN_MASKS: masks must be a torch.Tensor, received {type(m).__name__}")
        if m.ndim == 3:
            m = m.unsqueeze(0)
        if m.ndim != 4:
            raise OrganMaskError(
                f"ORGAN_MASKS: masks must be shaped (B, K, H, W) or (K, H, W), received {tuple(self.masks.shape)}"
            )
        if m.shape[1] != len(names):
            raise OrganMaskError(
                f"ORGAN_MASKS: {len(names)} names {list(names)} but {m.shape[1]} mask channels"
            )
        if len(set(names)) != len(names):
            raise OrganMaskError(f"ORGAN_MASKS: organ names repeat after normalisation: {list(names)}")
        if tuple(m.shape[-2:]) != tuple(self.image_size):
            raise OrganMaskError(
                f"ORGAN_MASKS: masks are {tuple(m.shape[-2:])} (H, W) but belong to an image of "
                f"{tuple(self.image_size)}; resize them with the image's geometry record"
            )
        m = m.float()
        if not torch.isfinite(m).all():
            bad = [n for k, n in enumerate(names) if not torch.isfinite(m[:, k]).all()]
            raise OrganMaskError(f"ORGAN_MASKS: organ mask(s) {bad} contain NaN or Inf values")
        lo, hi = float(m.min()), float(m.max())
        if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise OrganMaskError(
                f"ORGAN_MASKS: values must lie in [0, 1], received range [{lo:.4g}, {hi:.4g}]; "
                "normalise label images (e.g. divide 0..255 by 255) before building masks"
            )
        m = m.clamp(0.0, 1.0)
        area = m.flatten(2).amax(dim=2)  # (B, K)
        empty = [(b, names[k]) for b, k in (area <= 0).nonzero().tolist()]
        if empty:
            raise OrganMaskError(
                "ORGAN_MASKS: organ mask(s) are empty (all zero): "
                + ", ".join(f"'{n}' (batch item {b})" for b, n in empty)
                + "; drop these organs or check the segmentation"
            )
        object.__setattr__(self, "masks", m)
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    @property
    def batch_size(self) -> int:
        return int(self.masks.shape[0])

    def has(self, name: str) -> bool:
        return normalise_organ_name(name) in self.names

    def index(self, name: str) -> int:
        key = normalise_organ_name(name)
        if key not in self.names:
            raise OrganMaskError(f"organ '{name}' is not in these ORGAN_MASKS; available: {list(self.names)}")
        return self.names.index(key)

    def get(self, name: str) -> torch.Tensor:
        """The (B, H, W) mask of one organ."""
        return self.masks[:, self.index(name)]

    def select(self, names: Iterable[str]) -> OrganMasks:
        idx = [self.index(n) for n in names]
        return OrganMasks(
            names=tuple(self.names[i] for i in idx),
            masks=self.masks[:, idx],
            image_size=self.image_size,
            scheme=self.scheme,
            meta=dict(self.meta),
        )

    def union(self, names: Iterable[str] | None = None) -> torch.Tensor:
        """(B, H, W) soft union (max) of the named organs, or of all of them."""
        sel = self.masks if names is None else self.masks[:, [self.index(n) for n in names]]
        return sel.amax(dim=1)

    def to(self, device: torch.device | str) -> OrganMasks:
        return OrganMasks(self.names, self.masks.to(device), self.image_size, self.scheme, dict(self.meta))

    def describe(self) -> str:
        b, k, h, w = self.masks.shape
        areas = ", ".join(f"{n} {float(self.masks[:, i].mean()):.1%}" for i, n in enumerate(self.names))
        return f"OrganMasks[{self.scheme}] {k} organs at {h}x{w} (batch {b}): {areas}"
