"""The one place the attention nodes turn a model and a ``sites`` string into site keys."""

from __future__ import annotations

from ..cxr_core.attention.site_scheme import SiteKey, SiteScheme, scheme_of


def model_scheme(model) -> SiteScheme:  # noqa: ANN001
    """The attention-site scheme of ``model`` (a ModelPatcher); refuses unsupported model families."""
    base = getattr(model, "model", None)
    if base is None or not hasattr(model, "get_model_object"):
        raise ValueError(f"model: expected a MODEL (ComfyUI ModelPatcher), received {type(model).__name__}")
    return scheme_of(base, model.get_model_object("diffusion_model"))


def model_sites(model, sites: str) -> tuple[SiteKey, ...]:  # noqa: ANN001
    """Check that ``model`` (a ModelPatcher) is supported and read ``sites`` against its attention sites.

    The keys come in the model's execution order.
    """
    return model_scheme(model).parse(sites)
