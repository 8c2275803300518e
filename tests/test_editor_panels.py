"""What the pack's nodes hand the editor: the metrics table, the organ legend, the attention browser,
the radiograph preview, help pages and tooltips (in process; the browser side is test_browser_editor.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cxr_pack.cxr_core.attention.capture import AttentionMapStore
from cxr_pack.cxr_core.mask_overlay import organ_colour, organ_preview, overlay_organs
from cxr_pack.nodes import _NODE_MODULES
from cxr_pack.nodes.attention_capture import AttentionMapRender
from cxr_pack.nodes.metrics import CXRMetrics
from metric_helpers import as_image, demo_pairs

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "js" / "docs"
LEADS_NODES = {"CXRPrompt", "AnatomyAttentionGate", "PathologyCrossAttnReweight", "EnergyLatentCorrector",
               "AttentionMapCapture"}  # fmt: skip
SCHEMAS = [node.define_schema() for module in _NODE_MODULES for node in module.NODES]


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import folder_paths

    monkeypatch.setattr(folder_paths, "get_temp_directory", lambda: str(tmp_path))
    return tmp_path


def test_metrics_table_shows_every_figure_of_every_image(temp_dir: Path) -> None:
    x0, x1, region = demo_pairs()["lesion"]
    res = CXRMetrics.execute(as_image(x0), as_image(torch.stack([x1, x0])), region, csv_name="")
    records = res.ui["cxr_metrics"]
    (table,) = res.ui["cxr_table"]
    assert table["columns"] == ["metric", "image 0", "image 1"]
    rows = {r[0]: r[1:] for r in table["rows"]}
    assert rows["SSIM global"] == [f"{records[0]['ssim_global']:.4f}", f"{records[1]['ssim_global']:.4f}"]
    assert rows["PSNR outside region"][0] == f"{records[0]['psnr_outside_db']:.2f} dB"
    assert rows["PSNR global"][1] == "inf dB", "an identical pair has infinite PSNR, not n/a"
    assert rows["CLIP-I"] == ["n/a", "n/a"]
    assert rows["Edit localisation"][0] == f"{records[0]['localisation']:.3f}"
    assert rows["Region fraction"][0] == f"{100 * records[0]['region_fraction']:.1f} %"
    assert any("clip_i: no CLIP_VISION connected" in n for n in table["notes"])
    assert not any(label.startswith("Validity") for label in rows), "no validity rows without a classifier"
    assert "image 0: validity: no validity classifier connected" in table["notes"]
    assert all(len(r) == 3 for r in table["rows"]), "one value per image in every row"
    json.dumps(res.ui["cxr_table"], allow_nan=False)


def test_organ_preview_has_a_legend_of_the_organs_found() -> None:
    h, w = 256, 256
    image = torch.full((1, h, w, 3), 0.5)
    masks = torch.zeros(1, 3, h, w)
    masks[0, 0, 120:200, 30:110] = 1  # right_lung
    masks[0, 2, 140:220, 120:200] = 1  # heart; left_lung stays empty
    names = ("right_lung", "left_lung", "heart")
    plain = overlay_organs(image, names, masks)
    preview = organ_preview(image, names, masks)
    assert preview.shape == plain.shape
    assert torch.equal(preview[:, 120:, :], plain[:, 120:, :]), "the legend stays in the top-left corner"
    legend = (preview[0, :120, :120] * 255).round()

    def has(colour: tuple[float, float, float]) -> bool:
        target = torch.tensor([round(c * 255) for c in colour], dtype=legend.dtype)
        return bool(((legend - target).abs().amax(-1) <= 1).sum() >= 20)

    assert has(organ_colour("right_lung")) and has(organ_colour("heart"))
    assert not has(organ_colour("left_lung")), "an organ absent from the masks is not in the legend"


def test_attention_render_offers_every_word_at_every_step_and_the_mean(temp_dir: Path) -> None:
    store = AttentionMapStore(("pleural", "effusion"))
    g = torch.Generator().manual_seed(0)
    maps = {w: {s: torch.rand(1, 8, 8, generator=g) for s in (0, 2, 5)} for w in ("pleural", "effusion")}
    store.publish(maps, total_steps=6)
    res = AttentionMapRender.execute(store, torch.rand(1, 64, 64, 3), steps="mean", alpha=0.5)
    frames = res.ui["cxr_attention"]
    keys = [(f["word"], f["step"]) for f in frames]
    assert keys == [(w, s) for w in ("pleural", "effusion") for s in ("mean", "0", "2", "5")]
    for f in frames:
        assert (temp_dir / f["image"]["subfolder"] / f["image"]["filename"]).is_file()
        assert f["image"]["type"] == "temp"
    assert res.result[0].shape[0] == 2, "the IMAGE output still follows the steps input"


def test_radiograph_loader_previews_the_working_image(
    temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import folder_paths
    from cxr_pack.cxr_core.demo_assets import demo_radiograph_path
    from cxr_pack.nodes.radiograph_loader import CXRImageLoader
    from PIL import Image

    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(demo_radiograph_path().parent))
    res = CXRImageLoader.execute(demo_radiograph_path().name, working_size=128)
    (img,) = res.ui.as_dict()["images"]
    saved = Image.open(Path(folder_paths.get_temp_directory()) / img["subfolder"] / img["filename"])
    assert saved.size == (128, 128)
    schema = CXRImageLoader.define_schema()
    assert not schema.inputs[0].upload, (
        "no image upload widget: it cannot take DICOM (js/cxr_radiograph.js does)"
    )


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.node_id)
def test_every_node_has_a_help_page_naming_its_inputs_and_outputs(schema) -> None:
    page = (
        DOCS / schema.node_id / "en.md"
    )  # where frontend 1.32 looks first: /extensions/<pack>/docs/<node>/<locale>.md
    assert page.is_file(), f"no help page {page.relative_to(REPO)}"
    text = page.read_text()
    assert text.startswith(f"# {schema.display_name}\n")
    for item in schema.inputs:
        assert f"`{item.id}`" in text, f"{schema.node_id}: input {item.id} is not on its help page"
    for item in schema.outputs:
        name = item.display_name or item.id
        assert f"`{name}`" in text, f"{schema.node_id}: output {name} is not on its help page"


@pytest.mark.parametrize(
    "schema", [s for s in SCHEMAS if s.node_id not in LEADS_NODES], ids=lambda s: s.node_id
)
def test_every_input_and_output_has_a_tooltip(schema) -> None:
    missing = [i.id for i in schema.inputs if not (i.tooltip or "").strip()]
    missing += [f"output {o.display_name or o.id}" for o in schema.outputs if not (o.tooltip or "").strip()]
    assert missing == [], f"{schema.node_id}: no tooltip on {missing}"


def test_help_pages_are_only_for_nodes_of_the_pack() -> None:
    ids = {s.node_id for s in SCHEMAS}
    pages = {p.parent.name for p in DOCS.glob("*/en.md")}
    assert pages == ids, f"help pages of no node: {sorted(pages - ids)}"
