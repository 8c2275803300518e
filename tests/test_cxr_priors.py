"""Spatial priors (METHOD.md section 5) on synthetic masks: monotone extent, inside the thorax, patient sides."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cxr_input_helpers import synthetic_organ_masks
from cxr_pack.cxr_core.organ_masks import OrganMasks
from cxr_pack.cxr_core.priors import PriorError, build_prior, feather, prior_region, thorax_mask
from cxr_pack.nodes.spatial_prior import PathologySpatialPrior

EXTENTS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0)
LUNG_PRIORS = ("effusion", "pneumothorax", "consolidation", "opacity", "atelectasis")
ALL_BUILT = (*LUNG_PRIORS, "cardiomegaly", "edema")


@pytest.fixture(scope="module")
def om() -> OrganMasks:
    return synthetic_organ_masks(120, 100)


def _cx(m: torch.Tensor) -> float:
    ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
    return float(xs.float().mean())


def _cy(m: torch.Tensor) -> float:
    ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
    return float(ys.float().mean())


@pytest.mark.parametrize("pathology", ALL_BUILT)
@pytest.mark.parametrize("side", ["right", "left", "bilateral"])
def test_extent_grows_region_and_prior_monotonically(om: OrganMasks, pathology: str, side: str) -> None:
    regions = [prior_region(om, pathology, side, e, zone="middle") for e in EXTENTS]
    for small, big in zip(regions, regions[1:], strict=False):
        assert bool((small <= big).all()), "a larger extent must contain the smaller region"
    areas = [float(r.sum()) for r in regions]
    assert areas[-1] > areas[0] > 0
    priors = [float(build_prior(om, pathology, side, e, 3.0, "middle").sum()) for e in EXTENTS]
    assert all(b >= a - 1e-3 for a, b in zip(priors, priors[1:], strict=False)), priors


@pytest.mark.parametrize("pathology", ALL_BUILT)
def test_prior_stays_inside_the_thorax(om: OrganMasks, pathology: str) -> None:
    thorax = thorax_mask(om)
    for e in (0.3, 1.0):
        prior = build_prior(om, pathology, "bilateral", e, 6.0, "lower")
        assert prior.shape == (1, 120, 100)
        assert float(prior.min()) >= 0.0 and float(prior.max()) <= 1.0
        assert float((prior * (1 - thorax)).max()) == 0.0
        assert float(prior.max()) > 0.5


@pytest.mark.parametrize("pathology", LUNG_PRIORS)
def test_lung_priors_stay_in_the_chosen_lung(om: OrganMasks, pathology: str) -> None:
    for side, lung in (("right", "right_lung"), ("left", "left_lung")):
        region = prior_region(om, pathology, side, 0.6, "middle")
        assert bool((region <= om.get(lung)).all())


@pytest.mark.parametrize("pathology", LUNG_PRIORS)
def test_left_and_right_are_the_patients(om: OrganMasks, pathology: str) -> None:
    """PA view: the patient's right lung is on the image's LEFT (small x), the left lung on the image's right."""
    right = build_prior(om, pathology, "right", 0.5, 2.0, "middle")[0]
    left = build_prior(om, pathology, "left", 0.5, 2.0, "middle")[0]
    assert _cx(right) < 50 < _cx(left)
    both = build_prior(om, pathology, "bilateral", 0.5, 2.0, "middle")[0]
    assert torch.allclose(both, (right + left).clamp(max=1.0), atol=1e-5)  # disjoint regions: blur is linear


def test_left_right_follow_the_masks_not_the_image_side() -> None:
    """An AP film shown flipped (patient's right on the image's right) still gets the patient's side."""
    om = synthetic_organ_masks(120, 100)
    flipped = OrganMasks(om.names, om.masks.flip(-1), om.image_size)
    prior = build_prior(flipped, "effusion", "right", 0.4, 0.0)[0]
    assert _cx(prior) > 50 and bool((prior <= flipped.get("right_lung")[0]).all())
    # and the meniscus still rises toward that lung's lateral (here: image-right) side
    medial_top, lateral_top = _fluid_tops(flipped, "right_lung", "right", lateral_is_left=False)
    assert lateral_top < medial_top - 2


def _fluid_tops(om: OrganMasks, lung_name: str, side: str, lateral_is_left: bool) -> tuple[int, int]:
    """Top row of the effusion region at 25 % and 75 % of the lung's width from its medial edge."""
    region = prior_region(om, "effusion", side, 0.3)[0]
    xs = torch.nonzero(om.get(lung_name)[0].any(dim=0), as_tuple=True)[0]
    lo, hi = int(xs.min()), int(xs.max())
    medial, lateral = (hi, lo) if lateral_is_left else (lo, hi)
    at = lambda u: int(round(medial + u * (lateral - medial)))  # noqa: E731
    top = lambda x: int(torch.nonzero(region[:, x], as_tuple=True)[0].min())  # noqa: E731
    return top(at(0.25)), top(at(0.75))


def test_effusion_is_basal_with_a_lateral_meniscus(om: OrganMasks) -> None:
    lung = om.get("right_lung")[0]
    region = prior_region(om, "effusion", "right", 0.3)[0]
    ys = torch.nonzero(lung, as_tuple=True)[0]
    top, bottom = int(ys.min()), int(ys.max())
    assert _cy(region) > (top + bottom) / 2
    # the fluid's upper edge is higher (smaller y) laterally: image left for the patient's right lung
    medial_top, lateral_top = _fluid_tops(om, "right_lung", "right", lateral_is_left=True)
    assert lateral_top < medial_top - 2


def test_pneumothorax_is_apical_and_lateral(om: OrganMasks) -> None:
    lung = om.get("left_lung")[0]
    region = prior_region(om, "pneumothorax", "left", 0.2)[0]
    assert _cy(region) < _cy(lung) and _cx(region) > _cx(lung)  # higher and more lateral than the lung


def test_consolidation_zones_and_area_fraction(om: OrganMasks) -> None:
    ys = [_cy(prior_region(om, "consolidation", "right", 0.5, z)[0]) for z in ("upper", "middle", "lower")]
    assert ys[0] < ys[1] < ys[2]
    lung = om.get("right_lung")[0] > 0.5
    rows = torch.nonzero(lung, as_tuple=True)[0]
    top, h = int(rows.min()), int(rows.max()) - int(rows.min()) + 1
    zone = lung.clone()
    zone[: int(np.ceil(top + h / 3))] = False
    zone[int(np.ceil(top + 2 * h / 3)) :] = False
    blob = prior_region(om, "opacity", "right", 0.4, "middle")[0]
    assert abs(float(blob.sum()) / float(zone.sum()) - 0.4) < 0.02


def test_cardiomegaly_widens_the_heart_and_ignores_side(om: OrganMasks) -> None:
    heart = om.get("heart")[0] > 0.5
    width = lambda m: int(torch.nonzero(m.any(dim=0)).max() - torch.nonzero(m.any(dim=0)).min() + 1)  # noqa: E731
    wide = prior_region(om, "cardiomegaly", "left", 0.5)[0] > 0.5
    assert bool((heart <= wide).all())
    assert width(wide) >= width(heart) + int(0.5 * width(heart)) - 2
    assert torch.equal(
        prior_region(om, "cardiomegaly", "right", 0.5), prior_region(om, "cardiomegaly", "left", 0.5)
    )


def test_edema_is_bilateral_and_perihilar(om: OrganMasks) -> None:
    region = prior_region(om, "edema", "right", 0.35)[0]  # side ignored: always both lungs
    assert (
        float((region * om.get("right_lung")[0]).sum()) > 0
        and float((region * om.get("left_lung")[0]).sum()) > 0
    )
    assert abs(_cx(region) - 50) < 5  # central (perihilar), not peripheral


def test_atelectasis_is_a_basal_wedge(om: OrganMasks) -> None:
    lung = om.get("left_lung")[0]
    region = prior_region(om, "atelectasis", "left", 0.5)[0]
    assert _cy(region) > _cy(lung) + 10
    rows = region.sum(dim=1)
    ys = torch.nonzero(rows, as_tuple=True)[0]
    assert float(rows[ys.max() - 1]) > float(rows[ys.min() + 1])  # wider at the base than at the apex


def test_feather_softens_edges_and_zero_is_hard(om: OrganMasks) -> None:
    hard = build_prior(om, "effusion", "right", 0.5, 0.0)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    soft = build_prior(om, "effusion", "right", 0.5, 4.0)
    assert int(((soft > 0.05) & (soft < 0.95)).sum()) > int(((hard > 0.05) & (hard < 0.95)).sum())
    x = torch.zeros(1, 21, 21)
    x[0, 10, 10] = 1.0
    assert abs(float(feather(x, 2.0).sum()) - 1.0) < 1e-4  # a normalised Gaussian


def test_custom_prior_passes_the_mask_through(om: OrganMasks) -> None:
    m = torch.zeros(120, 100)
    m[10:30, 10:30] = 1
    assert torch.equal(build_prior(om, "custom", "right", 1.0, 0.0, custom_mask=m), m[None])
    with pytest.raises(PriorError, match="needs a custom_mask"):
        build_prior(om, "custom")
    with pytest.raises(PriorError, match=r"\(H, W\) = \(120, 100\)"):
        build_prior(om, "custom", custom_mask=torch.ones(1, 64, 64))
    with pytest.raises(PriorError, match="empty"):
        build_prior(om, "custom", custom_mask=torch.zeros(120, 100))


def test_batch_of_masks_gives_a_batch_of_priors() -> None:
    om = synthetic_organ_masks(120, 100, batch=2)
    masks = om.masks.clone()
    masks[1] = masks[1].flip(-1)
    om2 = OrganMasks(om.names, masks, om.image_size)
    p = build_prior(om2, "effusion", "left", 0.5, 2.0)
    assert p.shape == (2, 120, 100) and _cx(p[0]) > 50 > _cx(p[1])


# ---- bad input --------------------------------------------------------------------------------
def test_empty_lung_for_the_requested_side(om: OrganMasks) -> None:
    masks = om.masks.clone()
    masks[:, om.index("left_lung")] *= 0.3  # present but below 0.5 everywhere: empty once thresholded
    weak = OrganMasks(om.names, masks, om.image_size)
    with pytest.raises(PriorError, match="the patient's left lung mask is empty"):
        build_prior(weak, "effusion", "left", 0.5, 2.0)
    assert float(build_prior(weak, "effusion", "right", 0.5, 2.0).max()) > 0.5  # the other side works


def test_missing_organs_and_bad_parameters(om: OrganMasks) -> None:
    only_right = om.select(["right_lung"])
    with pytest.raises(PriorError, match=r"needs 'left_lung' in ORGAN_MASKS, which has \['right_lung'\]"):
        build_prior(only_right, "effusion", "left")
    with pytest.raises(PriorError, match="needs 'heart'"):
        build_prior(only_right, "cardiomegaly")
    with pytest.raises(PriorError, match=r"extent must lie in \(0, 1\]"):
        build_prior(om, "effusion", "right", 0.0)
    with pytest.raises(PriorError, match=r"extent must lie in \(0, 1\]"):
        build_prior(om, "effusion", "right", 1.5)
    with pytest.raises(PriorError, match="pathology must be one of"):
        build_prior(om, "nodule")
    with pytest.raises(PriorError, match="the patient's side"):
        build_prior(om, "effusion", "image_left")
    with pytest.raises(PriorError, match="feather_px"):
        build_prior(om, "effusion", "right", 0.5, -1.0)


def test_node_outputs_mask_and_preview(om: OrganMasks) -> None:
    prior, preview = PathologySpatialPrior.execute(om, "consolidation", "left", 0.5, 4.0, "upper").result
    assert prior.shape == (1, 120, 100) and preview.shape == (1, 120, 100, 3)
    assert torch.equal(prior, build_prior(om, "consolidation", "left", 0.5, 4.0, "upper"))
    red = preview[0, ..., 0] - preview[0, ..., 1]
    assert _cx(red > 0.3) > 50  # the preview shows it on the image's right: the patient's left
    image = torch.rand(1, 120, 100, 3)
    assert PathologySpatialPrior.execute(om, "edema", image=image).result[1].shape == (1, 120, 100, 3)
    with pytest.raises(ValueError, match="connect the image these masks were loaded for"):
        PathologySpatialPrior.execute(om, "edema", image=torch.rand(1, 64, 64, 3))
