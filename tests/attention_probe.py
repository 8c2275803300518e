"""A test observer (an engine contribution that records q, k, v and the bias at each call), and grid-aligned masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from cxr_pack.cxr_core.organ_masks import OrganMasks


@dataclass(eq=False)
class Probe:
    role: ClassVar[str] = "observe"
    label: ClassVar[str] = ""  # a test instrument, not a module: not in activity reports

    kind: str
    window: object
    cond_only: bool = False
    prompt: object = None
    records: list = field(default_factory=list)

    def observe(
        self, call, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias, extra_options: dict
    ) -> None:
        self.records.append(
            {
                "site": call.site,
                "hw": call.hw,
                "q": q.detach().clone(),
                "k": k.detach().clone(),
                "v": v.detach().clone(),
                "bias": None if bias is None else bias.detach().clone(),
                "heads": extra_options["n_heads"],
                "cond_or_uncond": list(extra_options["cond_or_uncond"]),
                "sigma": float(extra_options["sigmas"].max()),
            }
        )


def add_probe(model, kind: str, sites, window=None) -> Probe:
    """Install a recording probe on an already patched (cloned) model at the given sites."""
    from cxr_pack.cxr_core.attention.engine import install
    from cxr_pack.cxr_core.attention.schedule import Window

    probe = Probe(kind=kind, window=window or Window())
    install(model, probe, list(sites))
    return probe


def quadrant_masks(size: int = 128) -> torch.Tensor:
    """Two organs aligned to every site grid of a size/8 latent: A = left half, B = top-right quadrant."""
    m = torch.zeros(2, size, size)
    m[0, :, : size // 2] = 1.0
    m[1, : size // 2, size // 2 :] = 1.0
    return m


def split_lung_organs(size: int = 128) -> OrganMasks:
    """Right lung = left half of the image, left lung = right half: every site grid splits them exactly."""
    m = torch.zeros(1, 2, size, size)
    m[:, 0, :, : size // 2] = 1.0
    m[:, 1, :, size // 2 :] = 1.0
    return OrganMasks(names=("right_lung", "left_lung"), masks=m, image_size=(size, size))


def lower_right_prior(size: int = 128) -> torch.Tensor:
    """A spatial prior over the lower-right quadrant, (1, size, size)."""
    p = torch.zeros(1, size, size)
    p[:, size // 2 :, size // 2 :] = 1.0
    return p
