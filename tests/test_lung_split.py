"""A both-lungs mask split into the patient's right and left lung (issue 16, item 10)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from cxr_input_helpers import synthetic_chest
from cxr_pack.cxr_core.lung_split import LungSplitError, split_lungs
from cxr_pack.cxr_core.organ_masks import OrganMaskError, OrganMasks
from cxr_pack.cxr_core.priors import build_prior
from cxr_pack.nodes.lung_split import OrganMaskSplitLungs
from cxr_pack.nodes.organ_mask_loader import OrganMaskLoader
from helpers import comfy_folders

H, W = 120, 100


def _both() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    organs = synthetic_chest(H, W)
    return organs["right_lung"] | organs["left_lung"], organs


def _split(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return split_lungs(mask.astype(np.float32))


def test_two_separate_lungs_go_to_the_patients_sides() -> None:
    both, organs = _both()
    right, left = _split(both)
    assert np.array_equal(right > 0, organs["right_lung"]) and np.array_equal(left > 0, organs["left_lung"])


def test_lungs_touching_at_a_narrow_bridge_are_cut_at_the_midline() -> None:
    both, organs = _both()
    both[40:44, 20:80] = True  # a 4-row bridge across the mediastinum
    right, left = _split(both)
    assert (right > 0)[:, W // 2 :].sum() == 0 and (left > 0)[:, : W // 2].sum() == 0
    assert (right > 0).sum() >= organs["right_lung"].sum() and (left > 0).sum() >= organs["left_lung"].sum()


def test_soft_values_are_kept() -> None:
    both, _ = _both()
    soft = both.astype(np.float32) * 0.8
    right, left = split_lungs(soft)
    assert set(np.unique(right)) == {0.0, np.float32(0.8)} and float((right + left).sum()) == pytest.approx(
        float(soft.sum()), rel=1e-6
    )


def test_specks_do_not_count_as_a_lung() -> None:
    both, organs = _both()
    both[2:4, 2:4] = True  # a 4-px speck far from the lungs
    right, _ = _split(both)
    assert np.array_equal(right > 0, organs["right_lung"])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("one_lung", "all of the lung region lies on the image's left half"),
        ("unequal", "the two halves differ too much in area"),
        ("thorax", "crosses the image's midline over"),
        ("empty", "the mask is empty"),
    ],
)
def test_ambiguous_masks_are_refused_saying_why(case: str, message: str) -> None:
    both, organs = _both()
    if case == "one_lung":
        mask = organs["right_lung"]
    elif case == "unequal":
        small = np.zeros_like(both)
        small[50:60, 70:75] = True
        mask = organs["right_lung"] | small
    elif case == "thorax":
        mask = np.zeros_like(both)
        mask[10:110, 10:90] = True
    else:
        mask = np.zeros_like(both)
    with pytest.raises(LungSplitError, match=message):
        _split(mask)


def test_node_splits_a_loaded_lungs_mask_and_the_prior_then_works(tmp_path) -> None:
    both, organs = _both()
    folder = tmp_path / "input"
    with comfy_folders(input=folder):
        (folder / "case").mkdir()
        cv2.imwrite(str(folder / "case" / "lungs.png"), both.astype(np.uint8) * 255)
        cv2.imwrite(str(folder / "case" / "heart.png"), organs["heart"].astype(np.uint8) * 255)
        loaded = OrganMaskLoader.execute(source="mask_folder", path="case").result[0]
    assert set(loaded.names) == {"lungs", "heart"}
    with pytest.raises(ValueError, match="left_lung"):
        build_prior(loaded, "effusion", "left", 0.3, 0.0)
    split = OrganMaskSplitLungs.execute(loaded).result[0]
    assert split.names == ("right_lung", "left_lung", "heart")
    assert torch.equal(split.get("left_lung")[0] > 0, torch.from_numpy(organs["left_lung"]))
    prior = build_prior(split, "effusion", "left", 0.3, 0.0)
    assert float(prior[:, :, W // 2 :].sum()) > 0 and float(prior[:, :, : W // 2].sum()) == 0


def test_node_names_a_missing_organ_and_an_existing_split() -> None:
    both, organs = _both()
    om = OrganMasks(names=("heart",), masks=torch.from_numpy(organs["heart"][None, None].astype(np.float32)),
                    image_size=(H, W))  # fmt: skip
    with pytest.raises(OrganMaskError, match="organ 'lungs' is not in the set \\['heart'\\]"):
        OrganMaskSplitLungs.execute(om)
    pair = np.stack([organs["right_lung"], both])[None].astype(np.float32)
    om = OrganMasks(names=("right_lung", "lung"), masks=torch.from_numpy(pair), image_size=(H, W))
    with pytest.raises(OrganMaskError, match="already has 'right_lung'"):
        OrganMaskSplitLungs.execute(om)
