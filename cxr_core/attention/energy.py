"""Attention-concentration energy (docs/METHOD.md section 4).

E(z_t) = mean over pathology tokens tau of (1 - <P, p_tau>)^2, with p_tau the
token's cross-attention map on the cond branch, averaged over the energy sites
(16x16 by default) and heads, normalised to sum 1; P the spatial prior at the
same grid. Computed per batch item: (B,).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .measures import attention_probs
from .prompt import RegulatedPrompt, site_columns
from .protocol import SiteCall
from .schedule import Window
from .site_masks import mask_to_site


class StopForward(Exception):
    """Raised after the last site the energy needs: the rest of the UNet never runs."""


@dataclass(eq=False)
class EnergyProbe:
    """Observer for one gradient pass: keeps the pathology tokens' maps with their graph."""

    role: ClassVar[str] = "observe"
    label: ClassVar[str] = ""  # internal to the corrector's gradient pass: not reported on its own

    columns: tuple[int, ...]  # token positions in the prompt
    prompt_len: int
    window: Window = field(default_factory=Window)
    kind: str = "attn2"
    cond_only: bool = True
    prompt: RegulatedPrompt | None = None
    maps: list[tuple[tuple[int, int], torch.Tensor]] = field(default_factory=list)

    def observe(self, call: SiteCall, q, k, v, bias, extra_options: dict) -> None:  # noqa: ANN001
        cols = site_columns(call, self.columns, self.prompt_len, "EnergyLatentCorrector")
        probs = attention_probs(q, k, extra_options["n_heads"], bias)  # (B, H, Nq, Nk), cond-only pass
        self.maps.append((call.hw, probs[..., cols].mean(1)))  # (B, Nq, T)


def concentration_energy(
    maps: list[tuple[tuple[int, int], torch.Tensor]], prior: torch.Tensor
) -> torch.Tensor:
    """E per batch item from per-site token maps and a (Bm, H, W) prior.

    Maps of one grid size are averaged before normalising (METHOD.md); when
    sites of several grids are chosen, the concentrations of each grid are averaged.
    """
    if not maps:
        raise ValueError("energy: no attention maps were captured; check the energy sites")
    by_grid: dict[tuple[int, int], list[torch.Tensor]] = {}
    for hw, m in maps:
        by_grid.setdefault(hw, []).append(m)
    conc = []
    for hw, ms in by_grid.items():
        p = torch.stack(ms).mean(0)  # (B, N, T)
        p = p / p.sum(1, keepdim=True).clamp(min=1e-12)
        prior_tok = mask_to_site(prior, hw).to(p)  # (Bm, N)
        conc.append((p * prior_tok[:, :, None]).sum(1))  # (B, T)
    c = torch.stack(conc).mean(0)  # (B, T)
    return ((1.0 - c) ** 2).mean(-1)  # (B,)
