"""Canonical organ names and their synonyms.

Organ names travel between loaders, attention nodes and metrics, so they are
normalised to one snake_case spelling here. "left" and "right" are always the
*patient's* left and right (image right on a PA radiograph is patient left).
"""

from __future__ import annotations

import re

CANONICAL_ORGANS: tuple[str, ...] = (
    "right_lung",
    "left_lung",
    "heart",
    "mediastinum",
    "trachea",
    "aorta",
    "spine",
    "ribs",
    "right_clavicle",
    "left_clavicle",
    "right_hemidiaphragm",
    "left_hemidiaphragm",
    "abdomen",
    "thorax",
    "background",
)

_SIDE_WORDS = {"l": "left", "lt": "left", "left": "left", "r": "right", "rt": "right", "right": "right"}
_ORGAN_WORDS = {
    "lung": "lung",
    "lungs": "lung",
    "clavicle": "clavicle",
    "hemidiaphragm": "hemidiaphragm",
    "diaphragm": "hemidiaphragm",
}
_PLAIN_SYNONYMS = {
    "cardiac": "heart",
    "heart": "heart",
    "rib": "ribs",
    "ribs": "ribs",
    "spine": "spine",
    "vertebrae": "spine",
    "spinal column": "spine",
    "mediastinum": "mediastinum",
    "trachea": "trachea",
    "aorta": "aorta",
    "abdomen": "abdomen",
    "thorax": "thorax",
    "background": "background",
}


def normalise_organ_name(name: str) -> str:
    """Map a user's spelling ("left lung", "Lung_Left", "L lung") to the canonical name.

    Names that are not recognised come back in snake_case, so custom organs
    from a user legend keep working.
    """
    words = [w for w in re.split(r"[\s_\-]+", name.strip().lower()) if w]
    if not words:
        raise ValueError("organ name is empty; expected e.g. 'left_lung' or 'heart'")
    phrase = " ".join(words)
    if phrase in _PLAIN_SYNONYMS:
        return _PLAIN_SYNONYMS[phrase]
    sides = [_SIDE_WORDS[w] for w in words if w in _SIDE_WORDS]
    organs = [_ORGAN_WORDS[w] for w in words if w in _ORGAN_WORDS]
    if len(sides) == 1 and len(organs) == 1 and len(words) == 2:
        return f"{sides[0]}_{organs[0]}"
    return "_".join(words)
