"""The ORGAN_MASKS value and its validation."""

from __future__ import annotations

import pytest
import torch
from cxr_pack.cxr_core.organ_masks import OrganMaskError, OrganMasks
from cxr_pack.cxr_core.organ_names import normalise_organ_name


def _masks(k: int = 2, h: int = 8, w: int = 6) -> torch.Tensor:
    m = torch.zeros(k, h, w)
    for i in range(k):
        m[i, :, i * (w // k) : (i + 1) * (w // k)] = 1.0
    return m


def test_valid_masks_normalise_names_and_shape() -> None:
    om = OrganMasks(names=("Right Lung", "lung_left"), masks=_masks(), image_size=(8, 6), scheme="chexmask")
    assert om.names == ("right_lung", "left_lung")
    assert om.masks.shape == (1, 2, 8, 6)
    assert om.get("L lung").shape == (1, 8, 6)
    assert torch.equal(om.union(), om.masks.amax(dim=1))
    assert om.select(["left lung"]).names == ("left_lung",)


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("left lung", "left_lung"), ("Lung_Left", "left_lung"), ("L lung", "left_lung"), ("rt lung", "right_lung"),
     ("cardiac", "heart"), ("Mediastinum", "mediastinum"), ("left-hemidiaphragm", "left_hemidiaphragm")],
)  # fmt: skip
def test_organ_synonyms(spelling: str, canonical: str) -> None:
    assert normalise_organ_name(spelling) == canonical


def test_empty_mask_is_rejected_by_name() -> None:
    m = _masks()
    m[1] = 0
    with pytest.raises(OrganMaskError, match="left_lung.*empty|empty.*left_lung"):
        OrganMasks(names=("right_lung", "left_lung"), masks=m, image_size=(8, 6))


def test_wrong_size_is_rejected() -> None:
    with pytest.raises(OrganMaskError, match=r"\(8, 6\).*\(16, 12\)"):
        OrganMasks(names=("right_lung", "left_lung"), masks=_masks(), image_size=(16, 12))


def test_nan_is_rejected() -> None:
    m = _masks()
    m[0, 0, 0] = float("nan")
    with pytest.raises(OrganMaskError, match="NaN"):
        OrganMasks(names=("right_lung", "left_lung"), masks=m, image_size=(8, 6))


def test_out_of_range_is_rejected() -> None:
    with pytest.raises(OrganMaskError, match=r"\[0, 1\].*255"):
        OrganMasks(names=("right_lung", "left_lung"), masks=_masks() * 255, image_size=(8, 6))


def test_name_count_mismatch_and_duplicates() -> None:
    with pytest.raises(OrganMaskError, match="2 mask channels"):
        OrganMasks(names=("heart",), masks=_masks(), image_size=(8, 6))
    with pytest.raises(OrganMaskError, match="repeat"):
        OrganMasks(names=("left lung", "lung_left"), masks=_masks(), image_size=(8, 6))


def test_unknown_organ_lists_available() -> None:
    om = OrganMasks(names=("right_lung", "left_lung"), masks=_masks(), image_size=(8, 6))
    with pytest.raises(OrganMaskError, match="available.*right_lung"):
        om.get("heart")


def test_input_tensor_is_not_modified() -> None:
    m = _masks() * 1.00001  # slightly above 1, within tolerance
    before = m.clone()
    OrganMasks(names=("right_lung", "left_lung"), masks=m, image_size=(8, 6))
    assert torch.equal(m, before)


def test_organ_mask_from_mask_node_chains() -> None:
    from cxr_pack.nodes.organ_mask_compose import OrganMaskFromMask

    m = _masks()
    (first,) = OrganMaskFromMask.execute(m[0], "right lung").result
    (both,) = OrganMaskFromMask.execute(m[1], "left lung", first).result
    assert both.names == ("right_lung", "left_lung")
    with pytest.raises(OrganMaskError, match="already"):
        OrganMaskFromMask.execute(m[1], "L lung", both)
    with pytest.raises(OrganMaskError, match="resize"):
        OrganMaskFromMask.execute(torch.ones(4, 4), "heart", both)
