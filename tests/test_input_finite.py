"""Non-finite numbers and stretched masks are refused (issue 16, items 2 and 3)."""

from __future__ import annotations

import math

import pytest
import torch
from attention_probe import quadrant_masks
from comfy_api.latest import io
from cxr_pack.cxr_core.mask_aspect import MaskAspectError, check_mask_aspect
from cxr_pack.cxr_core.organ_masks import OrganMasks
from cxr_pack.nodes import _NODE_MODULES
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from cxr_pack.nodes.validation import float_input_names
from helpers import random_cond, sample

PACK_NODES = [node for module in _NODE_MODULES for node in module.NODES]
FLOAT_INPUTS = [(node, name) for node in PACK_NODES for name in float_input_names(node)]


def _defaults(node: type[io.ComfyNode]) -> dict:
    """Every input at its schema default (sockets without a widget: None)."""
    return {i.id: getattr(i, "default", None) for i in node.define_schema().inputs}


def test_the_pack_has_float_inputs_to_guard() -> None:
    names = {f"{n.__name__}.{i}" for n, i in FLOAT_INPUTS}
    assert {"AnatomyAttentionGate.strength", "PathologyCrossAttnReweight.lambda_in",
            "EnergyLatentCorrector.eta", "EnergyLatentCorrector.kappa", "PathologySpatialPrior.extent",
            "OrganMaskLoader.threshold"} <= names  # fmt: skip


@pytest.mark.parametrize(("node", "name"), FLOAT_INPUTS, ids=[f"{n.__name__}.{i}" for n, i in FLOAT_INPUTS])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_every_float_input_refuses_non_finite_values(node, name: str, bad: float) -> None:
    kwargs = _defaults(node)
    kwargs[name] = bad
    with pytest.raises(ValueError) as err:
        node.execute(**kwargs)
    msg = str(err.value)
    assert msg.startswith(f"{node.define_schema().node_id}: {name} must be a finite number")
    assert f"received {bad}" in msg


def _tall_masks() -> OrganMasks:
    return OrganMasks(names=("left_lung", "heart"), masks=quadrant_masks(128), image_size=(128, 128))


def _gate(model):
    return AnatomyAttentionGate.execute(
        model, _tall_masks(), organs="all", strength=4.0, hard=False, tau=0.5, sites="64,32", start_percent=0.0,
        end_percent=1.0, background="free", enabled=True,
    ).result[0]  # fmt: skip


def test_masks_of_another_aspect_than_the_latent_are_refused(tiny_model) -> None:
    model = _gate(tiny_model)
    with pytest.raises(MaskAspectError, match=r"masks are 128x128 .* attention grid of 16x24"):
        sample(model, random_cond(1), random_cond(2), steps=1, latent_hw=(16, 24))


def test_masks_of_the_same_aspect_at_another_resolution_still_work(tiny_model) -> None:
    out = sample(_gate(tiny_model), random_cond(1), random_cond(2), steps=1, latent_hw=(24, 24))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("mask_hw", "grid_hw", "ok"),
    [((128, 128), (2, 3), False), ((128, 192), (2, 3), True), ((104, 72), (2, 1), True),  # ceil-rounded grids
     ((72, 64), (5, 4), True), ((512, 448), (32, 28), True), ((512, 512), (32, 28), False)],
)  # fmt: skip
def test_aspect_check_allows_only_the_rounding_of_the_unet(mask_hw, grid_hw, ok: bool) -> None:
    if ok:
        check_mask_aspect(mask_hw, grid_hw)
    else:
        with pytest.raises(MaskAspectError):
            check_mask_aspect(mask_hw, grid_hw)
