"""From masks as read (any source) to ORGAN_MASKS aligned with the working image.

Steps: choose the organs the user asked for (unknown and absent names are
errors that list the valid ones); apply the radiograph's geometry record (the
same resize + pad as the image, so masks stay pixel-aligned); threshold
("binary") or keep soft values ("soft"); build the validated ``OrganMasks``.
Without a geometry record, masks must already have the image's exact size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .chexmask import read_chexmask
from .geometry import GeometryError, ImageGeometry
from .image_limits import is_jpeg
from .input_paths import path_fingerprint, resolve_input_path
from .label_schemes import BUILTIN_SCHEMES, builtin_legend, read_legend
from .mask_sources import (
    MaskSourceError,
    RawMasks,
    decode_label_map,
    read_image_array,
    read_mask_folder,
    read_npz,
)
from .organ_masks import OrganMaskError, OrganMasks
from .organ_names import CANONICAL_ORGANS, normalise_organ_name

log = logging.getLogger("cxr_counterfactual.organ_mask_loading")

MASK_MODES: tuple[str, ...] = ("binary", "soft")
SOURCES: tuple[str, ...] = ("label_map", "mask_folder", "npz", "chexmask_csv", "torchxrayvision")
LEGENDS: tuple[str, ...] = ("auto", *BUILTIN_SCHEMES, "json")


@dataclass(frozen=True)
class MaskRequest:
    """What OrganMaskLoader was asked for; file names are relative to the input folder."""

    source: str  # one of SOURCES
    path: str = ""  # label map / folder / npz / csv; for torchxrayvision the weight file name ("" = default)
    legend: str = "auto"  # label_map: one of LEGENDS
    legend_json: str = ""  # label_map with legend "json" (or "auto" to override the sidecar)
    image_id: str = ""  # chexmask_csv: the image's id
    min_quality: float = 0.7  # chexmask_csv: minimum Dice RCA (Mean)
    seg_model: str = "chestx_det_pspnet"  # torchxrayvision: which model


def read_source(
    req: MaskRequest,
    input_dir: str | Path,
    *,
    grey01: torch.Tensor | None = None,  # (H0, W0) radiograph at original size; torchxrayvision only
    weight_dirs: list[Path] | None = None,
    device: torch.device | str = "cpu",
) -> RawMasks:
    """Read the masks a request names, at the source's own resolution."""
    what = f"OrganMaskLoader ({req.source})"
    if req.source not in SOURCES:
        raise MaskSourceError(
            f"OrganMaskLoader: source must be one of {list(SOURCES)}, received '{req.source}'"
        )
    if req.source == "torchxrayvision":
        from .segmentation_models import check_available, default_weight_dirs, segment

        dirs = list(weight_dirs or []) + default_weight_dirs()
        check_available(req.seg_model, req.path, dirs)
        if grey01 is None:
            raise MaskSourceError(f"{what}: connect the radiograph IMAGE (and its geometry) to segment it")
        return segment(grey01, req.seg_model, req.path, dirs, device)
    kind = "dir" if req.source == "mask_folder" else "file"
    path = resolve_input_path(req.path, input_dir, what=f"{what} path", kind=kind)
    if req.source == "mask_folder":
        return read_mask_folder(path, what=what, input_dir=input_dir)
    if req.source == "npz":
        return read_npz(path, what=what)
    if req.source == "chexmask_csv":
        return read_chexmask(path, req.image_id, req.min_quality, what=what)
    legend, scheme = _legend_for(req, path, input_dir, what)
    labels = read_image_array(path, what)
    return decode_label_map(labels, legend, lossy=is_jpeg(path), scheme=scheme, what=what)


def source_fingerprint(source: str, path: str, legend: str, legend_json: str, input_dir: str | Path) -> str:
    """A change marker for every file a request reads: the file or the folder's files, and the legend.

    The auto legend sidecar (``<label map>.json``) counts, so editing it re-runs the loader.
    """
    label = resolve_input_path(
        path, input_dir, what="path", kind="dir" if source == "mask_folder" else "file"
    )
    parts = [source, path_fingerprint(label)]
    if source == "label_map" and legend_json.strip():
        parts.append(path_fingerprint(resolve_input_path(legend_json, input_dir, what="legend_json")))
    elif source == "label_map" and legend == "auto" and label.with_suffix(".json").is_file():
        parts.append(path_fingerprint(label.with_suffix(".json")))
    return "||".join(parts)


def _legend_for(req: MaskRequest, label_path: Path, input_dir: str | Path, what: str) -> tuple[dict, str]:
    if req.legend not in LEGENDS:
        raise MaskSourceError(f"{what}: legend must be one of {list(LEGENDS)}, received '{req.legend}'")
    if req.legend in BUILTIN_SCHEMES:
        return builtin_legend(req.legend), req.legend
    if req.legend_json.strip():
        return read_legend(
            resolve_input_path(req.legend_json, input_dir, what=f"{what} legend_json")
        ), "custom"
    sidecar = label_path.with_suffix(".json")
    if req.legend == "auto" and sidecar.is_file():  # resolved again: the sidecar may be a symlink out
        rel = sidecar.relative_to(Path(input_dir).resolve()).as_posix()
        return read_legend(resolve_input_path(rel, input_dir, what=f"{what} legend sidecar")), "custom"
    raise MaskSourceError(
        f"{what}: no legend for '{label_path.name}': choose a built-in legend ({', '.join(BUILTIN_SCHEMES)}), "
        f"give legend_json, or put '{sidecar.name}' next to the label map"
    )


def parse_organ_selection(text: str) -> list[str] | None:
    """'all' or empty -> None (every organ); otherwise comma-separated names, normalised."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items or (len(items) == 1 and items[0].lower() == "all"):
        return None
    return [normalise_organ_name(t) for t in items]


def select_organs(
    raw: RawMasks, organs: list[str] | None, what: str = "organs"
) -> tuple[list[str], np.ndarray]:
    """The requested organs' names and (B, K, h, w) masks."""
    if organs is None:
        return list(raw.names), raw.masks
    missing_known, unknown = [], []
    for name in organs:
        if name in raw.names:
            continue
        if name in raw.absent or name in CANONICAL_ORGANS:
            missing_known.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise OrganMaskError(
            f"{what}: unknown organ name(s) {unknown}; valid names are {list(CANONICAL_ORGANS)} (synonyms such "
            f"as 'left lung' or 'L lung' work) and this source offers {list(raw.names)}"
        )
    if missing_known:
        hint = f" (the source lists {sorted(set(missing_known) & set(raw.absent))} but they have no pixels)"
        raise OrganMaskError(
            f"{what}: organ(s) {missing_known} are absent from this source, which offers {list(raw.names)}"
            + (hint if set(missing_known) & set(raw.absent) else "")
            + "; remove them from 'organs' or use a source that has them"
        )
    idx = [raw.names.index(n) for n in organs]
    return list(organs), raw.masks[:, idx]


def finish_masks(
    raw: RawMasks,
    organs: list[str] | None,
    geometry: ImageGeometry | None,
    image_size: tuple[int, int] | None,
    mask_mode: str = "binary",
    threshold: float = 0.5,
    what: str = "OrganMaskLoader",
) -> OrganMasks:
    """Select, align, threshold and validate. ``image_size`` is the working image's (H, W) when known."""
    if mask_mode not in MASK_MODES:
        raise OrganMaskError(f"{what}: mask_mode must be one of {list(MASK_MODES)}, received '{mask_mode}'")
    if not 0.0 < threshold < 1.0:
        raise OrganMaskError(f"{what}: threshold must lie in (0, 1), received {threshold}")
    names, arr = select_organs(raw, organs, what=f"{what} organs")
    masks = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))  # (B, K, h, w)
    if geometry is not None:
        if image_size is not None and tuple(image_size) != tuple(geometry.working_size):
            raise GeometryError(
                f"{what}: the image is {tuple(image_size)} (H, W) but the geometry record's working size is "
                f"{geometry.working_size}; connect the geometry from the CXRImageLoader that made this image"
            )
        masks = geometry.apply(masks, what=f"{what} masks").clamp(0, 1)
    elif image_size is not None and tuple(masks.shape[-2:]) != tuple(image_size):
        h, w = masks.shape[-2:]
        ih, iw = image_size
        raise GeometryError(
            f"{what}: masks are {h}x{w} (H x W, aspect {h / w:.3f}) but the image is {ih}x{iw} (aspect "
            f"{ih / iw:.3f}) and no geometry record is connected; connect CXRImageLoader's 'geometry' output so "
            "masks get the image's exact resize and padding"
        )
    if mask_mode == "binary":
        masks = (masks >= threshold).float()
    out = OrganMasks(
        names=tuple(names),
        masks=masks,
        image_size=tuple(masks.shape[-2:]),
        scheme=raw.scheme,
        meta={**raw.meta, "geometry": geometry.describe() if geometry else "none"},
    )
    check_laterality(out, what)
    return out


def check_laterality(om: OrganMasks, what: str = "organ masks") -> bool:
    """Warn when the patient's right lung lies on the image's right (expected: image left on PA/AP)."""
    if not (om.has("right_lung") and om.has("left_lung")):
        return True
    xs = torch.arange(om.image_size[1], dtype=torch.float32)

    def cx(m: torch.Tensor) -> float:
        col = m.sum(dim=(0, 1))  # (W,)
        return float((col * xs).sum() / col.sum().clamp_min(1e-6))

    ok = cx(om.get("right_lung")) < cx(om.get("left_lung"))
    if not ok:
        log.warning(
            "%s: the patient's RIGHT lung lies on the image's right side. On a PA/AP radiograph it should be "
            "on the image's left: the masks may use image left/right, or the image is flipped",
            what,
        )
    return ok
