"""The picture report finds each variant's counterfactual, prior and difference map among a row's images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cxr_pack.cxr_runner.pictures import LABEL_H, ROW_LABEL_W, TILE, images_by_role, picture_grid, role_of
from cxr_pack.cxr_runner.results import ResultStore
from PIL import Image


def test_picture_roles_from_node_titles_or_file_names() -> None:
    rec = {"outputs": ["k/cxr/full_00001_.png", "k/cxr/prior_00001_.png", "k/cxr/difference_00001_.png",
                       "k/cxr/attention_00001_.png", "k/cxr/organ_masks_00001_.png"],
           "output_titles": {"k/cxr/full_00001_.png": "Save counterfactual", "k/cxr/prior_00001_.png": "Save prior overlay",
                             "k/cxr/difference_00001_.png": "Save difference map", "k/cxr/attention_00001_.png": "Save heatmaps",
                             "k/cxr/organ_masks_00001_.png": "Save mask overlay"}}  # fmt: skip
    assert images_by_role(rec) == {"counterfactual": "k/cxr/full_00001_.png", "prior": "k/cxr/prior_00001_.png",
                                   "difference": "k/cxr/difference_00001_.png"}  # fmt: skip
    untitled = {"outputs": ["k/ComfyUI_00001_.png", "k/cxr/prior_00001_.png", "k/cxr/attention_00001_.png"]}
    assert images_by_role(untitled) == {
        "counterfactual": "k/ComfyUI_00001_.png",
        "prior": "k/cxr/prior_00001_.png",
    }
    assert role_of("k/x.png", "Save heatmaps") is None, "a titled node that is none of the three is left out"


def _variant(folder: Path, rows: int, cf_value: int, with_difference: bool) -> Path:
    store = ResultStore(folder)
    for i in range(rows):
        key = f"k{i}"
        (folder / key).mkdir(parents=True)
        outputs = {
            f"{key}/cf.png": ("Save counterfactual", cf_value),
            f"{key}/prior.png": ("Save prior overlay", 30),
        }
        if with_difference:
            outputs[f"{key}/diff.png"] = ("Save difference map", 200)
        for rel, (_, value) in outputs.items():
            Image.new("RGB", (32, 32), (value,) * 3).save(folder / rel)
        store.append({"row_index": i, "row_key": key, "status": "ok", "row": {"image": "film.png", "seed": str(i)},
                      "outputs": list(outputs), "output_titles": {p: t for p, (t, _) in outputs.items()}})  # fmt: skip
    return folder


def test_grid_places_each_role_and_computes_a_missing_difference_map(tmp_path: Path) -> None:
    Image.new("L", (32, 32), 100).save(tmp_path / "film.png")
    variants = {
        "full": _variant(tmp_path / "full", 3, 150, True),
        "plain": _variant(tmp_path / "plain", 2, 160, False),
    }
    grid_path = picture_grid(variants, tmp_path / "grid.png", count=5, image_dirs=[tmp_path])
    with Image.open(grid_path) as im:
        grid = np.asarray(im.convert("L"))
    assert grid.shape == (LABEL_H + 2 * (TILE + LABEL_H) * 2, ROW_LABEL_W + TILE * 4), (
        "2 rows both variants have"
    )

    def tile(row: int, column: int, lower: bool = False) -> int:
        y = LABEL_H + 2 * (TILE + LABEL_H) * row + (TILE + LABEL_H if lower else 0) + TILE // 2
        return int(grid[y, ROW_LABEL_W + TILE * column + TILE // 2])

    for row in (0, 1):
        assert (tile(row, 0), tile(row, 1), tile(row, 2), tile(row, 3)) == (100, 30, 150, 160)
        assert (tile(row, 2, lower=True), tile(row, 3, lower=True)) == (200, 60), (
            "saved map; |160 - 100| computed"
        )
    assert (
        picture_grid(variants, tmp_path / "none.png", count=2, image_dirs=[tmp_path / "elsewhere"])
        is not None
    )
    with Image.open(tmp_path / "none.png") as im:
        blank = np.asarray(im.convert("L"))[
            LABEL_H + 10 : LABEL_H + 40, ROW_LABEL_W + 10 : ROW_LABEL_W + TILE - 10
        ]
        assert (blank == 255).all(), "no original: an empty tile with a note, not a picture"
