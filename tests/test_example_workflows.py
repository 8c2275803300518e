"""example_workflows/: valid against the real server, API twins match, and workflow (a) runs end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from cxr_pack.cxr_runner.client import output_images
from cxr_pack.cxr_runner.workflow_format import set_input, ui_to_api, validate_ui

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
RECORD_FIELDS = {
    "ssim_global", "ssim_outside", "ssim_inside", "ssim_organs", "psnr_global_db", "psnr_outside_db", "mae_global",
    "mae_outside", "mae_inside", "localisation", "clip_i", "validity", "region_fraction", "run_tag", "null_reasons",
}  # fmt: skip


def test_every_workflow_has_an_api_twin_and_a_thumbnail() -> None:
    assert len(WORKFLOWS) == 7
    for wf in WORKFLOWS:
        assert (wf.parent / "api" / wf.name).is_file(), wf.name
        assert wf.with_suffix(".jpg").is_file(), wf.name
        ui = json.loads(wf.read_text())
        assert any(n["type"] == "Note" for n in ui["nodes"]), f"{wf.name} explains itself in a note"


@pytest.mark.server
def test_ui_workflows_are_valid_and_twins_match(comfy_client) -> None:
    info = comfy_client.object_info()
    for wf in WORKFLOWS:
        ui = json.loads(wf.read_text())
        assert validate_ui(ui, info) == [], wf.name
        twin = json.loads((wf.parent / "api" / wf.name).read_text())
        assert ui_to_api(ui, info) == twin, f"{wf.name}: API twin differs from the UI graph"
    ablation = json.loads((REPO / "example_workflows" / "api" / "ablation_no_gate.json").read_text())
    assert "AnatomyAttentionGate" not in {n["class_type"] for n in ablation.values()}
    reweight = next(n for n in ablation.values() if n["class_type"] == "PathologyCrossAttnReweight")
    loader = next(k for k, n in ablation.items() if n["class_type"] == "CheckpointLoaderSimple")
    assert reweight["inputs"]["model"] == [loader, 0], (
        "the bypassed gate passes the checkpoint's MODEL through"
    )


def _demo_inputs(input_dir: Path) -> None:
    from cxr_pack.cxr_core.demo_assets import demo_label_map_path, demo_legend_path, demo_radiograph_path

    shutil.copy(demo_radiograph_path(), input_dir / "RG1_UNCR.dcm")
    shutil.copy(demo_label_map_path(), input_dir / "RG1_UNCR_labels.png")
    shutil.copy(demo_legend_path(), input_dir / "RG1_UNCR_labels.json")


@pytest.mark.server
@pytest.mark.checkpoint
def test_full_workflow_runs_end_to_end(comfy_server, comfy_client) -> None:
    _demo_inputs(comfy_server.input_dir)
    api = json.loads((REPO / "example_workflows" / "api" / "cxr_counterfactual_full.json").read_text())
    set_input(api, "Radiograph", "working_size", 128)
    set_input(api, "Sampler", "steps", 4)
    entry = comfy_client.run(api, timeout_s=900)
    files = {img["filename"].split("_0")[0]: img for img in output_images(entry)}
    for prefix in ("cxr_counterfactual_full", "attention", "difference", "organ_masks", "prior"):
        assert prefix in files, f"no {prefix} image in {sorted(files)}"
        img = files[prefix]
        assert (comfy_server.output_dir / img["subfolder"] / img["filename"]).is_file()
    records = [r for out in entry["outputs"].values() for r in out.get("cxr_metrics", [])]
    assert len(records) == 1
    missing = RECORD_FIELDS - records[0].keys()
    assert not missing, f"metrics report lacks {missing}"
    assert records[0]["ssim_global"] is not None
    rows = list(csv.DictReader((comfy_server.output_dir / "cxr" / "metrics.csv").open()))
    assert rows and rows[-1]["run_tag"] == "cxr_counterfactual_full"
