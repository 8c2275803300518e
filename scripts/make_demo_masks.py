"""Make the committed demo organ masks for RG1_UNCR.dcm by classical image processing.

Usage: ``$CXR_PY scripts/make_demo_masks.py [--out assets/demo]`` (deterministic;
about two seconds). Writes:

- ``RG1_UNCR_labels.png``: uint8 label map at the radiograph's original
  resolution, 1955 x 1841 (H x W): 0 background, 1 right lung, 2 left lung,
  3 heart, 4 mediastinum (left/right are the PATIENT's; the patient's right
  lung is on the image's left on this PA film);
- ``RG1_UNCR_labels.json``: that legend, in the format OrganMaskLoader reads;
- ``RG1_UNCR_overlay.png``: the masks over the radiograph at 1/4 scale, to look at.

Method (on the radiograph read with its DICOM window and shrunk 4x):

1. Lungs. Contrast-limited histogram equalisation and a Gaussian blur (sigma
   5 px); Otsu's threshold inside the central 80 % of the film gives the dark
   "strong" lung cores. Air outside the body (very dark, at the film's corners)
   is removed with a 12 px margin. The largest core on each side of the image
   centre seeds a lung; it grows into "weak" dark pixels (blurred raw value
   < 0.80) within 20 px of it (hysteresis). Holes (nodules, vessels) are filled,
   each row is filled between the lung's outermost pixels, the apex is cut where
   the lung is narrower than 15 % of its widest row, and the lateral edge may
   only move medially above the widest row (cutting shoulder soft tissue) and
   only laterally below it (keeping a hazy base down to the costophrenic
   angle); both edges are then median-filtered and smoothed along the height.
2. Heart. Between the lungs' medial edges from 57 % of the lung height to the
   lower lung base, an ellipse is fitted to that region; the heart is the
   ellipse outside the lungs and above the lowest lung row.
3. Mediastinum. The region between the lungs' medial edges from the lung apices
   down to the heart's middle row, minus heart and lungs.

Limits, honestly: these are not expert contours. The film shows many large
pulmonary nodules and a hazy right base; the intensity threshold therefore
follows the visible aerated lung, which under-covers the lateral right base
and the retrocardiac and subdiaphragmatic lung (as CheXmask-style masks also
do). The heart is a fitted ellipse, not a traced border; its top is a fixed
fraction of the lung height. The mediastinum is "what lies between the lungs"
and includes the spine's projection. Good enough for demonstrating alignment,
gating and priors; not a reference segmentation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from import_pack import REPO, import_pack
from scipy import ndimage as ndi

LEGEND = {"1": "right_lung", "2": "left_lung", "3": "heart", "4": "mediastinum"}
SHRINK = 4
WEAK_THRESHOLD = 0.80
GROW_PX = 20
HEART_TOP = 0.57


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def lung_seeds(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strong dark cores -> (image-left seed, image-right seed, air mask)."""
    h, w = s.shape
    very_dark = cv2.GaussianBlur(s, (0, 0), 2) < 0.5
    lab, _ = ndi.label(very_dark)
    edge_labels = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    outside = np.isin(lab, edge_labels[edge_labels > 0])  # dark and touching the film's edge: air
    air = cv2.dilate(outside.astype(np.uint8), _disk(12)).astype(bool)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply((s * 255).astype(np.uint8))
    bc = cv2.GaussianBlur(clahe.astype(np.float32) / 255.0, (0, 0), 5)
    inner = bc[int(0.1 * h) : int(0.9 * h), int(0.1 * w) : int(0.9 * w)]
    t, _ = cv2.threshold((inner * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    strong = (bc * 255 < t) & ~air
    strong = cv2.morphologyEx(strong.astype(np.uint8), cv2.MORPH_OPEN, _disk(3)).astype(bool)
    lab, n = ndi.label(strong)
    sizes = ndi.sum(strong, lab, range(1, n + 1))
    cx = ndi.center_of_mass(strong, lab, range(1, n + 1))
    best = {}
    for i in np.argsort(sizes)[::-1]:
        side = "image_left" if cx[i][1] < w / 2 else "image_right"
        best.setdefault(side, lab == i + 1)
    if len(best) != 2:
        raise SystemExit("could not find a dark lung core on both sides of the film")
    return best["image_left"], best["image_right"], air


def grow_lung(seed: np.ndarray, s: np.ndarray, air: np.ndarray) -> np.ndarray:
    b = cv2.GaussianBlur(s, (0, 0), 3)
    near = cv2.dilate(seed.astype(np.uint8), _disk(GROW_PX)).astype(bool)
    weak = (b < WEAK_THRESHOLD) & ~air & near
    lab, _ = ndi.label(weak | seed)
    keep = np.unique(lab[seed])
    lung = np.isin(lab, keep[keep > 0])
    return ndi.binary_fill_holes(lung)


def smooth_rows(lung: np.ndarray, lateral_is_left: bool) -> np.ndarray:
    """Row-wise fill, apex cut, lateral edge narrowing toward the apex, smoothing of both edges."""
    h, w = lung.shape
    rows = np.flatnonzero(lung.any(axis=1))
    left = np.array([np.flatnonzero(lung[y]).min() for y in rows], dtype=np.float32)
    right = np.array([np.flatnonzero(lung[y]).max() for y in rows], dtype=np.float32)
    width = right - left
    ok = width >= 0.15 * width.max()
    first = int(np.argmax(ok))
    last = len(ok) - 1 - int(np.argmax(ok[::-1]))
    rows, left, right = rows[first : last + 1], left[first : last + 1], right[first : last + 1]
    # above its widest row a lung only narrows toward the apex: shoulder soft tissue is cut off
    n = len(rows)
    widest = n // 3 + int(np.argmax((right - left)[n // 3 :]))  # below the top third: not a shoulder flare
    # below it, the lateral edge runs down the rib cage to the costophrenic angle: hazy bases are kept
    if lateral_is_left:
        left[: widest + 1] = np.maximum.accumulate(left[: widest + 1][::-1])[::-1]
        left[widest:] = np.minimum.accumulate(left[widest:])
    else:
        right[: widest + 1] = np.minimum.accumulate(right[: widest + 1][::-1])[::-1]
        right[widest:] = np.maximum.accumulate(right[widest:])
    left = ndi.gaussian_filter1d(ndi.median_filter(left, 15, mode="nearest"), 3, mode="nearest")
    right = ndi.gaussian_filter1d(ndi.median_filter(right, 15, mode="nearest"), 3, mode="nearest")
    out = np.zeros_like(lung)
    xs = np.arange(w)[None, :]
    out[rows] = (xs >= left[:, None]) & (xs <= right[:, None])
    # round the apex and base a little
    out = cv2.morphologyEx(out.astype(np.uint8), cv2.MORPH_OPEN, _disk(4)).astype(bool)
    return out


def _edge_per_row(lung: np.ndarray, medial_is_max: bool, rows: np.ndarray) -> np.ndarray:
    """The lung's medial x for each row in ``rows``, carried to rows the lung does not reach."""
    have = lung.any(axis=1)
    ys = np.flatnonzero(have)
    vals = np.array(
        [np.flatnonzero(lung[y]).max() if medial_is_max else np.flatnonzero(lung[y]).min() for y in ys]
    )
    return np.interp(rows, ys, vals).astype(np.float32)


def heart_and_mediastinum(img_left: np.ndarray, img_right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = img_left.shape
    lungs = img_left | img_right
    ys = np.flatnonzero(lungs.any(axis=1))
    top, bottom = int(ys.min()), int(ys.max())
    bottom_left = int(np.flatnonzero(img_left.any(axis=1)).max())
    bottom_right = int(np.flatnonzero(img_right.any(axis=1)).max())
    rows = np.arange(top, bottom + 1)
    med_l = _edge_per_row(img_left, True, rows)  # medial edge of the image-left (patient right) lung
    med_r = _edge_per_row(img_right, False, rows)  # medial edge of the image-right (patient left) lung
    between = np.zeros((h, w), dtype=bool)
    xs = np.arange(w)[None, :]
    between[rows] = (xs > med_l[:, None]) & (xs < med_r[:, None])
    y0 = int(top + HEART_TOP * (bottom - top))
    y1 = max(bottom_left, bottom_right)
    cand = between.copy()
    cand[:y0] = False
    cand[y1 + 1 :] = False
    contours, _ = cv2.findContours(cand.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate(contours)
    ellipse = cv2.fitEllipse(pts)
    heart = np.zeros((h, w), np.uint8)
    cv2.ellipse(heart, ellipse, 1, -1)
    heart = heart.astype(bool) & ~lungs
    heart[y1 + 1 :] = False
    heart[:y0] = heart[:y0] & between[:y0]
    lab, _ = ndi.label(heart)
    if lab.max() > 1:  # keep the main body
        sizes = ndi.sum(heart, lab, range(1, lab.max() + 1))
        heart = lab == int(np.argmax(sizes)) + 1
    med = between.copy()
    heart_rows = np.flatnonzero(heart.any(axis=1))
    med[int(heart_rows.mean()) :] = False  # below the heart's middle, what lies beside it is not mediastinum
    med &= ~heart & ~lungs
    med = cv2.morphologyEx(med.astype(np.uint8), cv2.MORPH_OPEN, _disk(2)).astype(bool)
    return heart, med


def upsample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    big = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(big, (0, 0), 2.0) >= 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "assets" / "demo")
    args = parser.parse_args()
    import_pack()
    from cxr_pack.cxr_core import demo_assets as demo
    from cxr_pack.cxr_core import radiograph_io as rio

    radiograph = rio.load_radiograph(demo.demo_radiograph_path())
    full = radiograph.pixels  # (1955, 1841)
    H, W = full.shape
    s = cv2.resize(full, (W // SHRINK, H // SHRINK), interpolation=cv2.INTER_AREA)
    seed_l, seed_r, air = lung_seeds(s)
    img_left = smooth_rows(grow_lung(seed_l, s, air), lateral_is_left=True)  # patient's right lung
    img_right = smooth_rows(grow_lung(seed_r, s, air), lateral_is_left=False)  # patient's left lung
    img_right &= ~img_left
    heart, med = heart_and_mediastinum(img_left, img_right)
    labels = np.zeros((H, W), np.uint8)
    for value, m in ((4, med), (3, heart), (2, img_right), (1, img_left)):  # lungs drawn last, on top
        labels[upsample(m, (H, W))] = value
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out / "RG1_UNCR_labels.png"), labels)
    (args.out / "RG1_UNCR_labels.json").write_text(json.dumps(LEGEND, indent=2) + "\n")
    small = cv2.resize(labels, (W // SHRINK, H // SHRINK), interpolation=cv2.INTER_NEAREST)
    grey = (cv2.cvtColor((s * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)).astype(np.float32)
    colours = {1: (255, 140, 50), 2: (90, 215, 25), 3: (60, 60, 255), 4: (25, 205, 255)}  # BGR
    over = grey.copy()
    for v, c in colours.items():
        m = small == v
        over[m] = 0.55 * grey[m] + 0.45 * np.array(c, np.float32)
        edge = m & ~cv2.erode(m.astype(np.uint8), _disk(1)).astype(bool)
        over[edge] = c
    over = over.astype(np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(over, "patient R", (8, 470), font, 0.45, (255, 255, 255), 1)
    cv2.putText(over, "patient L", (W // SHRINK - 80, 470), font, 0.45, (255, 255, 255), 1)
    cv2.imwrite(str(args.out / "RG1_UNCR_overlay.png"), over)
    areas = {LEGEND[str(v)]: f"{(labels == v).mean():.1%}" for v in range(1, 5)}
    print(f"wrote {args.out}: label map {H}x{W}, areas {areas}")


if __name__ == "__main__":
    main()
