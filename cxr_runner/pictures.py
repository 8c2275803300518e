"""Picture report: for chosen rows, the original, the prior, each variant's counterfactual and difference map.

Each row of the grid is one manifest row (the first ``count`` rows that every
variant finished, in row order): the original film (the manifest's ``image``
cell, found beside the manifest or in ``image_dirs``), the prior overlay, then
one column per variant with its counterfactual above its difference map. The
images are found in each variant's results by the title of the node that saved
them ("Save counterfactual", "Save prior overlay", "Save difference map" in
``example_workflows/``), or, for older results, by the file name. A variant
without a saved difference map gets |counterfactual - original| in grey.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from .charts import font
from .results import ResultStore

log = logging.getLogger("cxr_counterfactual.runner")
ROLES = ("counterfactual", "prior", "difference")
OTHER_OUTPUTS = ("attention", "heatmap", "organ_mask", "mask overlay", "overlay")
TILE, LABEL_H, ROW_LABEL_W = 160, 18, 180


def role_of(path: str, title: str) -> str | None:
    """'counterfactual', 'prior', 'difference' or None, from the saving node's title, else the file name."""
    for text in (title.lower(), Path(path).name.lower()):
        for role in ("prior", "difference"):
            if role in text:
                return role
        if "counterfactual" in text:
            return "counterfactual"
    name = Path(path).name.lower()
    if not title and not any(word in name for word in OTHER_OUTPUTS):
        return "counterfactual"  # an untitled save of a baseline that names its file after itself
    return None


def images_by_role(record: dict) -> dict[str, str]:
    """{role: path relative to the run folder}; the first image of each role."""
    titles = record.get("output_titles") or {}
    found: dict[str, str] = {}
    for path in record.get("outputs") or []:
        role = role_of(path, titles.get(path, ""))
        if role is not None and role not in found:
            found[role] = path
    return found


def row_id(record: dict) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((record.get("row") or {}).items()))


def choose_rows(variants: dict[str, Path], count: int) -> list[tuple[dict[str, str], dict[str, dict]]]:
    """[(row cells, {variant: its ok record})] for the first ``count`` rows every variant finished."""
    latest = {name: {row_id(r): r for r in ResultStore(folder).latest().values() if r.get("status") == "ok"}
              for name, folder in variants.items()}  # fmt: skip
    first = next(iter(latest.values()), {})
    shared = [key for key in first if all(key in recs for recs in latest.values())]
    shared.sort(key=lambda key: first[key].get("row_index", 0))
    return [(dict(key), {name: latest[name][key] for name in variants}) for key in shared[:count]]


def picture_grid(variants: dict[str, Path], out: Path, count: int = 8, image_dirs: list[Path] | None = None) -> Path | None:  # fmt: skip
    """Write ``out`` (PNG) for up to ``count`` rows; None when no row was finished by every variant."""
    chosen = choose_rows(variants, count)
    if not chosen:
        log.warning("no row was finished by every variant (%s); no picture grid", ", ".join(variants))
        return None
    names = list(variants)
    columns = ["original", "prior", *names]
    width = ROW_LABEL_W + TILE * len(columns)
    block = 2 * (TILE + LABEL_H)
    grid = Image.new("RGB", (width, LABEL_H + block * len(chosen)), "white")
    d = ImageDraw.Draw(grid)
    d.font = font(12)
    for j, label in enumerate(columns):
        d.text((ROW_LABEL_W + TILE * j + 4, 2), label[:24], fill="black")
    for i, (cells, records) in enumerate(chosen):
        y = LABEL_H + block * i
        first = records[names[0]]
        d.text((4, y + 4), f"row {first.get('row_index')}", fill="black")
        for k, text in enumerate(_describe(cells)):
            d.text((4, y + 20 + 14 * k), text[:26], fill="gray")
        original = _original(cells, image_dirs or [])
        roles = {name: images_by_role(records[name]) for name in names}
        prior = next((variants[n] / roles[n]["prior"] for n in names if "prior" in roles[n]), None)
        _paste(grid, d, original, ROW_LABEL_W, y, "original not found")
        _paste(grid, d, _load(prior) if prior else None, ROW_LABEL_W + TILE, y, "no prior saved")
        for j, name in enumerate(names):
            x = ROW_LABEL_W + TILE * (j + 2)
            found = roles[name]
            cf = _load(variants[name] / found["counterfactual"]) if "counterfactual" in found else None
            _paste(grid, d, cf, x, y, "no counterfactual")
            diff = (
                _load(variants[name] / found["difference"])
                if "difference" in found
                else _abs_diff(cf, original)
            )
            d.text((x + 4, y + TILE + 2), "difference", fill="gray")
            _paste(grid, d, diff, x, y + TILE + LABEL_H, "no difference map")
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, format="PNG")
    return out


def _describe(cells: dict[str, str]) -> list[str]:
    keys = [k for k in ("pathology", "side", "extent", "seed") if cells.get(k)]
    return [f"{k}: {cells[k]}" for k in keys] + [Path(cells.get("image", "")).name]


def _original(cells: dict[str, str], image_dirs: list[Path]) -> Image.Image | None:
    cell = cells.get("image", "")
    if not cell:
        return None
    for base in [Path(), *image_dirs]:
        path = base / cell
        if path.is_file():
            return _load(path)
    return None


def _load(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as im:
            return ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, ValueError) as e:
        log.warning("cannot read %s for the picture report: %s", path, e)
        return None


def _abs_diff(cf: Image.Image | None, original: Image.Image | None) -> Image.Image | None:
    if cf is None or original is None:
        return None
    import numpy as np  # only here: the runner does not need numpy

    a = np.asarray(cf.convert("L"), dtype=np.int16)
    b = np.asarray(original.convert("L").resize(cf.size), dtype=np.int16)
    return Image.fromarray(np.abs(a - b).astype(np.uint8)).convert("RGB")


def _paste(
    grid: Image.Image, d: ImageDraw.ImageDraw, im: Image.Image | None, x: int, y: int, missing: str
) -> None:
    if im is None:
        d.rectangle([x + 2, y + 2, x + TILE - 3, y + TILE - 3], outline="lightgray")
        d.text((x + 8, y + TILE // 2 - 6), missing, fill="gray")
        return
    tile = ImageOps.contain(im, (TILE - 4, TILE - 4))
    grid.paste(tile, (x + 2 + (TILE - 4 - tile.width) // 2, y + 2 + (TILE - 4 - tile.height) // 2))
