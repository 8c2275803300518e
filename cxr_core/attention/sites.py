"""Attention sites of the SD1.5 UNet and their token grids (docs/METHOD.md, "Attention sites").

A site is a (block, number) pair in ComfyUI's naming, e.g. ("input", 1). Its
token grid scales with the latent: level L divides the latent by 2**L, with
ceil rounding (stride-2 convolutions with padding 1), so latents that are not
multiples of 8 still map exactly.
"""

from __future__ import annotations

import math
import re

SiteKey = tuple[str, int]

# level = number of stride-2 downsamplings between the latent and the site
SD15_SITE_LEVELS: dict[SiteKey, int] = {
    ("input", 1): 0,
    ("input", 2): 0,
    ("input", 4): 1,
    ("input", 5): 1,
    ("input", 7): 2,
    ("input", 8): 2,
    ("middle", 0): 3,
    ("output", 3): 2,
    ("output", 4): 2,
    ("output", 5): 2,
    ("output", 6): 1,
    ("output", 7): 1,
    ("output", 8): 1,
    ("output", 9): 0,
    ("output", 10): 0,
    ("output", 11): 0,
}
SD15_SITES: tuple[SiteKey, ...] = tuple(SD15_SITE_LEVELS)

# the grid side of each level for a 512-px image (64x64 latent), as users name them
GRID_AT_512: dict[int, int] = {0: 64, 1: 32, 2: 16, 3: 8}
_LEVEL_OF_GRID = {v: k for k, v in GRID_AT_512.items()}


def site_grid(latent_hw: tuple[int, int], site: SiteKey) -> tuple[int, int]:
    """(h, w) token grid of a site for a latent of (H, W)."""
    h, w = latent_hw
    for _ in range(SD15_SITE_LEVELS[site]):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


def parse_site_spec(spec: str) -> tuple[SiteKey, ...]:
    """Sites from a user string.

    Accepts "all", grid sizes at 512 px ("64,32" = every site with 64x64 or 32x32
    tokens at a 512-px image), "input"/"middle"/"output" for whole paths, and
    explicit sites such as "input4" or "output11". Items combine as a union.
    """
    text = (spec or "").strip().lower()
    if not text:
        raise ValueError("sites: empty; expected e.g. 'all', '64,32' or 'input4,output9'")
    chosen: list[SiteKey] = []
    for raw in text.replace(";", ",").split(","):
        item = re.sub(r"^(\d+)x\d+$", r"\1", raw.strip().replace(" ", ""))
        if not item:
            continue
        if item == "all":
            chosen.extend(SD15_SITES)
        elif item in ("input", "middle", "output"):
            chosen.extend(s for s in SD15_SITES if s[0] == item)
        elif item.isdigit() and int(item) in _LEVEL_OF_GRID:
            chosen.extend(s for s, lvl in SD15_SITE_LEVELS.items() if lvl == _LEVEL_OF_GRID[int(item)])
        else:
            site = _parse_named_site(item)
            if site is None:
                raise ValueError(
                    f"sites: cannot read '{raw.strip()}'; expected 'all', grid sizes at 512 px "
                    f"({', '.join(str(g) for g in GRID_AT_512.values())}), 'input', 'middle', 'output', "
                    f"or a site such as {', '.join(f'{b}{n}' for b, n in SD15_SITES[:3])}"
                )
            chosen.append(site)
    return tuple(s for s in SD15_SITES if s in set(chosen))


def _parse_named_site(item: str) -> SiteKey | None:
    for block in ("input", "middle", "output"):
        if item.startswith(block):
            rest = item[len(block) :].lstrip("_")
            if rest.isdigit() and (block, int(rest)) in SD15_SITE_LEVELS:
                return (block, int(rest))
    return None


def check_sd15_structure(diffusion_model: object) -> None:
    """Raise if the UNet does not have SD1.5's 16 attention sites in the expected blocks."""
    from torch import nn

    def has_attention(module: nn.Module) -> bool:
        return any(type(m).__name__ == "SpatialTransformer" for m in module.modules())

    found: list[SiteKey] = []
    for i, blk in enumerate(getattr(diffusion_model, "input_blocks", [])):
        if has_attention(blk):
            found.append(("input", i))
    mid = getattr(diffusion_model, "middle_block", None)
    if mid is not None and has_attention(mid):
        found.append(("middle", 0))
    for i, blk in enumerate(getattr(diffusion_model, "output_blocks", [])):
        if has_attention(blk):
            found.append(("output", i))
    if tuple(found) != SD15_SITES:
        raise ValueError(
            "model: these nodes patch the SD1.5 UNet (attention at input 1,2,4,5,7,8, middle 0, "
            f"output 3-11); this model has attention at {found or 'no blocks'}. Load an SD1.x checkpoint."
        )
