"""Split a both-lungs mask into the patient's right and left lung.

Many public lung masks and segmenters give one region for both lungs, while
the priors and the gate need ``right_lung`` and ``left_lung``. The split uses
connected components and the image's vertical midline: components (specks
under 1% of the area dropped) go to the side that holds their pixels; a
component that crosses the midline (lungs touching at the mediastinum) is cut
along it. On a frontal (PA or AP) film the patient's right lung is on the
image's left. The split is refused, saying why, when it is ambiguous: lung on
one side only, sides of very different size, or a region that crosses the
midline over much of its height (a thorax or body mask, not two lungs).
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_COMPONENT_SHARE = 0.01  # components smaller than this share of the mask are specks
MIN_SIDE_RATIO = 0.25  # the smaller lung must have at least this share of the larger one's area
MAX_MIDLINE_SHARE = 0.25  # the mask may cross the midline over at most this share of its height


class LungSplitError(ValueError):
    """A both-lungs mask that cannot be split into two lungs without guessing."""


def split_lungs(
    mask: np.ndarray, threshold: float = 0.5, what: str = "lungs mask"
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) soft mask of both lungs -> (right_lung, left_lung), the patient's, soft values kept."""
    m = np.asarray(mask, dtype=np.float32)
    binary = (m >= threshold).astype(np.uint8)
    total = int(binary.sum())
    if total == 0:
        raise LungSplitError(f"{what}: the mask is empty; expected one region holding both lungs")
    h, w = binary.shape
    mid = w / 2.0
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    image_left = np.zeros((h, w), bool)
    cols = np.arange(w)[None, :] + 0.5 < mid  # (1, W) True left of the midline
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] < MIN_COMPONENT_SHARE * total:
            continue
        comp = labels == k
        left_share = float((comp & cols).sum()) / float(comp.sum())
        if left_share >= 0.9:
            image_left |= comp
        elif left_share > 0.1:
            image_left |= comp & cols  # crosses the midline: cut along it
    kept = binary.astype(bool) & _kept(labels, stats, total)
    image_right = kept & ~image_left
    _check_unambiguous(kept, image_left, image_right, what)
    right_lung = np.where(image_left, m, 0.0).astype(np.float32)  # patient's right = image left
    left_lung = np.where(image_right, m, 0.0).astype(np.float32)
    return right_lung, left_lung


def _kept(labels: np.ndarray, stats: np.ndarray, total: int) -> np.ndarray:
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= MIN_COMPONENT_SHARE * total)
    return np.isin(labels, big[big > 0])


def _check_unambiguous(kept: np.ndarray, left: np.ndarray, right: np.ndarray, what: str) -> None:
    a_left, a_right = int(left.sum()), int(right.sum())
    if min(a_left, a_right) == 0:
        side = "left" if a_left else "right"
        raise LungSplitError(
            f"{what}: all of the lung region lies on the image's {side} half, so there is only one lung to "
            "find; give a mask that holds both lungs, or load the lungs as separate organs"
        )
    if min(a_left, a_right) < MIN_SIDE_RATIO * max(a_left, a_right):
        raise LungSplitError(
            f"{what}: the two halves differ too much in area ({a_left} px on the image's left, {a_right} px on "
            f"its right; the smaller must be at least {MIN_SIDE_RATIO:.0%} of the larger): the film may be "
            "off-centre or one lung missing. Split the lungs by hand (OrganMaskFromMask, one per lung)"
        )
    rows = np.flatnonzero(kept.any(axis=1))
    height = int(rows[-1] - rows[0] + 1)
    mid = kept.shape[1] // 2
    crossing = int((kept[:, mid - 1] & kept[:, mid]).sum()) if kept.shape[1] > 1 else 0
    if crossing > MAX_MIDLINE_SHARE * height:
        raise LungSplitError(
            f"{what}: the region crosses the image's midline over {crossing} of its {height} rows; two lungs "
            "meet at most at a narrow bridge, so this looks like a thorax or body mask. Give a lungs-only mask"
        )
