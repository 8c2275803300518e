"""Label schemes (legends) of the public CXR segmentations, and user JSON legends.

A legend maps label values of a label-map image to organ names. Built in:

- ``chexmask``: 1 = left lung, 2 = right lung, 3 = heart (CheXmask's column
  order; CheXmask itself is run-length encoded, see ``chexmask.py``).
- ``chestx-det``: the 14 anatomy classes of the ChestX-Det PSPNet that
  torchxrayvision ships, value = class index + 1.
- ``cxas``: the 159 classes of CXAS (ChestXRayAnatomySegmentation), value =
  class index + 1, in the order of torchxrayvision's CXAS model. CXAS classes
  overlap (``lung`` contains ``right lung``), so one label map can only hold
  one class per pixel; CXAS's own per-class PNG output is better read as a mask
  folder.

Class names are normalised with :func:`organ_names.normalise_organ_name`
(``Left Lung`` -> ``left_lung``); a few dataset-specific words are mapped to
the pack's names (``Weasand`` -> ``trachea``).

A user legend is JSON, either ``{"1": "right lung", "2": "left lung"}``,
``{"right lung": 1, ...}``, ``{"labels": {...}}`` or, for colour label maps,
``{"right lung": [255, 0, 0], ...}``. Value 0 is background unless listed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .organ_names import normalise_organ_name

log = logging.getLogger("cxr_counterfactual.label_schemes")

CHEXMASK_CLASSES: tuple[str, ...] = ("Left Lung", "Right Lung", "Heart")

CHESTX_DET_CLASSES: tuple[str, ...] = (
    "Left Clavicle", "Right Clavicle", "Left Scapula", "Right Scapula", "Left Lung", "Right Lung",
    "Left Hilus Pulmonis", "Right Hilus Pulmonis", "Heart", "Aorta", "Facies Diaphragmatica",
    "Mediastinum", "Weasand", "Spine",
)  # fmt: skip

_RIBS = tuple(
    f"{ap} {n} rib {side}"
    for n in ("11th", "10th", "9th", "8th", "7th", "6th", "5th", "4th", "3rd", "2nd", "1st")
    for ap, side in (
        ("anterior", "right"),
        ("posterior", "right"),
        ("anterior", "left"),
        ("posterior", "left"),
    )
)
_RIB_LEVELS = tuple(
    f"{ap} {n} rib"
    for n in ("11th", "10th", "9th", "8th", "7th", "6th", "5th", "4th", "3rd", "2nd", "1st")
    for ap in ("posterior", "anterior")
)
CXAS_CLASSES: tuple[str, ...] = (
    "spine", "cervical spine", "thoracic spine", "lumbar spine",
    *(f"vertebrae C{i}" for i in range(1, 8)), *(f"vertebrae T{i}" for i in range(1, 13)),
    *(f"vertebrae L{i}" for i in range(1, 6)),
    "rib_cartilage", "sternum", "clavicles", "clavicle left", "clavicle right", "scapulas", "scapula left",
    "scapula right", "posterior 12th rib right", "posterior 12th rib left", *_RIBS, "12th rib", *_RIB_LEVELS,
    "diaphragm", "left hemidiaphragm", "right hemidiaphragm", "stomach", "small bowel", "duodenum", "liver",
    "pancreas", "kidney left", "kidney right", "cardiomediastinum", "upper mediastinum", "lower mediastinum",
    "anterior mediastinum", "middle mediastinum", "posterior mediastinum", "heart", "heart atrium left",
    "heart atrium right", "heart myocardium", "heart ventricle left", "heart ventricle right", "aorta",
    "ascending aorta", "descending aorta", "aortic arch", "pulmonary artery", "inferior vena cava", "esophagus",
    "lung", "right lung", "left lung", "lung base", "mid zone lung", "upper zone lung", "apical zone lung",
    "right upper zone lung", "right mid zone lung", "right lung base", "right apical zone lung",
    "left upper zone lung", "left mid zone lung", "left lung base", "left apical zone lung",
    "lung lower lobe left", "lung upper lobe left", "lung lower lobe right", "lung middle lobe right",
    "lung upper lobe right", "trachea", "tracheal bifurcation", "breast", "breast left", "breast right",
)  # fmt: skip

# dataset words that normalise_organ_name does not know
_DATASET_ALIASES = {
    "weasand": "trachea",
    "facies_diaphragmatica": "diaphragm",
    "vertebrae": "spine",
}

BUILTIN_SCHEMES: dict[str, tuple[str, ...]] = {
    "chexmask": CHEXMASK_CLASSES,
    "chestx-det": CHESTX_DET_CLASSES,
    "cxas": CXAS_CLASSES,
}


class LegendError(ValueError):
    """A legend that cannot be read or used, with how to fix it."""


def canonical_class_name(raw: str) -> str:
    """A dataset's class name in the pack's spelling ("Left Lung" -> "left_lung", "Weasand" -> "trachea")."""
    name = normalise_organ_name(raw)
    return _DATASET_ALIASES.get(name, name)


def builtin_legend(scheme: str) -> dict[int, str]:
    """{label value: organ name} of a built-in scheme (value = class index + 1)."""
    key = scheme.strip().lower()
    if key not in BUILTIN_SCHEMES:
        raise LegendError(
            f"legend: unknown scheme '{scheme}'; built-in schemes are {sorted(BUILTIN_SCHEMES)}"
        )
    legend = {i + 1: canonical_class_name(n) for i, n in enumerate(BUILTIN_SCHEMES[key])}
    if len(set(legend.values())) != len(legend):
        raise LegendError(
            f"legend '{scheme}': class names collide after normalisation"
        )  # a bug, not user input
    return legend


def read_legend(path: str | Path) -> dict[int | tuple[int, int, int], str]:
    """Read a JSON legend; keys are label values (int) or RGB triples (tuple), values organ names."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LegendError(f"legend_json: cannot read '{p.name}' as JSON ({exc})") from exc
    return parse_legend(data, p.name)


def parse_legend(data: object, what: str = "legend") -> dict[int | tuple[int, int, int], str]:
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]
    if not isinstance(data, dict) or not data:
        raise LegendError(
            f'{what}: expected a JSON object such as {{"1": "right lung", "2": "left lung"}}, '
            f"received {type(data).__name__}"
        )
    legend: dict[int | tuple[int, int, int], str] = {}
    for key, value in data.items():
        if isinstance(value, str):  # "1": "right lung"
            label, name = _label_value(key, what), value
        elif isinstance(value, (int, list)) and not isinstance(value, bool):  # "right lung": 1 or [r, g, b]
            label, name = _label_value(value, what), str(key)
        else:
            raise LegendError(f"{what}: entry {key!r}: {value!r} is neither a name nor a label value")
        if label in legend:
            raise LegendError(f"{what}: label value {label} is listed twice")
        legend[label] = canonical_class_name(name)
    names = list(legend.values())
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LegendError(f"{what}: organ(s) {dup} appear under several label values")
    kinds = {isinstance(k, tuple) for k in legend}
    if len(kinds) > 1:
        raise LegendError(f"{what}: mixes grey label values and RGB colours; use one kind")
    return legend


def _label_value(v: object, what: str) -> int | tuple[int, int, int]:
    if isinstance(v, list):
        if len(v) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in v):
            raise LegendError(f"{what}: colour {v} must be [r, g, b] with integers 0..255")
        return (v[0], v[1], v[2])
    try:
        value = int(str(v).strip())
    except ValueError as exc:
        raise LegendError(f"{what}: label value {v!r} is not an integer") from exc
    if not 0 <= value <= 65535:
        raise LegendError(f"{what}: label value {value} is outside 0..65535")
    return value
