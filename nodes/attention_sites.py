"""The one place the attention nodes turn a model and a ``sites`` string into site keys."""

from __future__ import annotations

from ..cxr_core.attention.sites import SiteKey, check_sd15_structure, parse_site_spec


def model_sites(model, sites: str) -> tuple[SiteKey, ...]:  # noqa: ANN001
    """Check that ``model`` (a ModelPatcher) is supported and read ``sites`` against its attention sites."""
    check_sd15_structure(model.get_model_object("diffusion_model"))
    return parse_site_spec(sites)
