"""SD1.5's attention sites as a fixed table, for SD1.5 callers (docs/METHOD.md, "Attention sites").

The attention nodes read the sites from the connected model (site_scheme.py);
this table is the scheme discovered from an SD1.5 UNet, kept so that code and
tests that work on SD1.5 alone can name its sites without a model. A site is a
(block, number) pair in ComfyUI's naming, e.g. ("input", 1). Its token grid
scales with the latent: level L divides the latent by 2**L, with ceil rounding
(stride-2 convolutions with padding 1), so latents that are not multiples of 8
still map exactly.
"""

from __future__ import annotations

from .site_scheme import Site, SiteKey, SiteScheme

__all__ = ["SD15_SCHEME", "SD15_SITES", "SD15_SITE_LEVELS", "SiteKey", "parse_site_spec", "site_grid"]

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
SD15_SCHEME = SiteScheme(
    family="SD1.x",
    prediction="epsilon",
    native_px=512,
    sites=tuple(Site(key, level, 1) for key, level in SD15_SITE_LEVELS.items()),
)


def site_grid(latent_hw: tuple[int, int], site: SiteKey) -> tuple[int, int]:
    """(h, w) token grid of an SD1.5 site for a latent of (H, W)."""
    return SD15_SCHEME.grid(latent_hw, site)


def parse_site_spec(spec: str) -> tuple[SiteKey, ...]:
    """SD1.5 sites from a user string (SiteScheme.parse on the SD1.5 table).

    Accepts "all", grid sizes at 512 px ("64,32" = every site with 64x64 or 32x32
    tokens at a 512-px image), "fine"/"mid"/"coarse"/"middle", "input"/"middle"/"output"
    for whole paths, and explicit sites such as "input4" or "output11". Items combine as a union.
    """
    return SD15_SCHEME.parse(spec)
