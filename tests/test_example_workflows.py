"""example_workflows/: valid against the real server, API twins match, and workflow (a) runs end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cxr_pack.cxr_runner.activity import activity_since
from cxr_pack.cxr_runner.client import output_images
from cxr_pack.cxr_runner.workflow_format import set_input, ui_to_api, validate_ui

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))  # named by their template titles


def _twin(wf: Path) -> Path:
    """The API twin of an editor workflow: example_workflows/api/<variant>.json (variant in the UI file's extra)."""
    return wf.parent / "api" / f"{json.loads(wf.read_text())['extra']['cxr_variant']}.json"


RECORD_FIELDS = {
    "ssim_global", "ssim_outside", "ssim_inside", "ssim_organs", "psnr_global_db", "psnr_outside_db", "mae_global",
    "mae_outside", "mae_inside", "localisation", "clip_i", "validity", "region_fraction", "run_tag", "null_reasons",
}  # fmt: skip


def test_every_workflow_has_an_api_twin_and_a_thumbnail() -> None:
    assert len(WORKFLOWS) == 7
    for wf in WORKFLOWS:
        assert _twin(wf).is_file(), wf.name
        assert wf.with_suffix(".jpg").is_file(), wf.name
        ui = json.loads(wf.read_text())
        assert any(n["type"] == "Note" for n in ui["nodes"]), f"{wf.name} explains itself in a note"


@pytest.mark.server
def test_ui_workflows_are_valid_and_twins_match(comfy_client) -> None:
    info = comfy_client.object_info()
    for wf in WORKFLOWS:
        ui = json.loads(wf.read_text())
        assert validate_ui(ui, info) == [], wf.name
        twin = json.loads(_twin(wf).read_text())
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


REGULATION = (
    "AnatomyAttentionGate",
    "PathologyCrossAttnReweight",
    "EnergyLatentCorrector",
    "AttentionMapCapture",
)
E2E_STEPS = 6  # progress i/5: reweight 0..0.4 -> steps 0-2, correction 0..0.25 -> steps 0-1


@pytest.fixture(scope="module")
def workflow_runs(comfy_server, comfy_client) -> dict:
    """Every example workflow through the real server at its own denoise and windows (128 px, 6 steps)."""
    from PIL import Image

    _demo_inputs(comfy_server.input_dir)
    runs = {}
    for wf in WORKFLOWS:
        api = json.loads(_twin(wf).read_text())
        variant = _twin(wf).stem
        set_input(api, "Radiograph", "working_size", 128)
        for node in api.values():
            if node["class_type"] in ("KSampler", "KSamplerAdvanced"):
                node["inputs"]["steps"] = E2E_STEPS
        offset = comfy_server.log_path.stat().st_size
        entry = comfy_client.run(api, timeout_s=900)
        images = {img["filename"].split("_0")[0]: img for img in output_images(entry)}
        cf = images[variant]
        pixels = np.asarray(Image.open(comfy_server.output_dir / cf["subfolder"] / cf["filename"]))
        enabled = sorted({n["class_type"] for n in api.values() if n["class_type"] in REGULATION
                          and n["inputs"].get("enabled", True)})  # fmt: skip
        runs[variant] = {"entry": entry, "images": images, "counterfactual": pixels, "enabled": enabled,
                         "activity": activity_since(comfy_server.log_path, offset)}  # fmt: skip
    return runs


@pytest.mark.server
@pytest.mark.checkpoint
def test_full_workflow_runs_end_to_end(comfy_server, workflow_runs) -> None:
    run = workflow_runs["cxr_counterfactual_full"]
    for prefix in ("cxr_counterfactual_full", "attention", "difference", "organ_masks", "prior"):
        assert prefix in run["images"], f"no {prefix} image in {sorted(run['images'])}"
        img = run["images"][prefix]
        assert (comfy_server.output_dir / img["subfolder"] / img["filename"]).is_file()
    records = [r for out in run["entry"]["outputs"].values() for r in out.get("cxr_metrics", [])]
    assert len(records) == 1
    missing = RECORD_FIELDS - records[0].keys()
    assert not missing, f"metrics report lacks {missing}"
    assert records[0]["ssim_global"] is not None
    rows = list(csv.DictReader((comfy_server.output_dir / "cxr" / "metrics.csv").open()))
    assert "cxr_counterfactual_full" in {r["run_tag"] for r in rows}


@pytest.mark.server
@pytest.mark.checkpoint
def test_every_enabled_module_acts_in_every_example_workflow(workflow_runs) -> None:
    """At the workflows' own settings (SDEdit, denoise 0.6): no module is silently idle."""
    assert len(workflow_runs) == 7
    for name, run in workflow_runs.items():
        acted = {label for rec in run["activity"] for label, m in rec["modules"].items() if m["steps"]}
        assert acted == set(run["enabled"]), f"{name}: enabled {run['enabled']}, acted {sorted(acted)}"
        print(f"{name}: " + "; ".join(
            f"{label} steps {m['steps']} ({m['calls']} calls)" for rec in run["activity"]
            for label, m in rec["modules"].items()
        ))  # fmt: skip
    full = workflow_runs["cxr_counterfactual_full"]
    assert len(full["activity"]) == 1 and full["activity"][0]["n_steps"] == E2E_STEPS
    steps = {label: m["steps"] for label, m in full["activity"][0]["modules"].items()}
    assert steps == {
        "AnatomyAttentionGate": list(range(E2E_STEPS)),
        "PathologyCrossAttnReweight": [0, 1, 2],
        "EnergyLatentCorrector": [0, 1],
        "AttentionMapCapture": list(range(E2E_STEPS)),
    }
    plain = workflow_runs["plain_sdedit"]  # all three modules bypassed; the capture only observes
    assert plain["enabled"] == ["AttentionMapCapture"]
    assert {label for rec in plain["activity"] for label in rec["modules"]} == {"AttentionMapCapture"}


@pytest.mark.server
@pytest.mark.checkpoint
def test_full_method_differs_from_each_ablation(workflow_runs) -> None:
    full = workflow_runs["cxr_counterfactual_full"]["counterfactual"]
    for name in ("ablation_no_gate", "ablation_no_reweight", "ablation_no_correction", "plain_sdedit"):
        other = workflow_runs[name]["counterfactual"]
        assert other.shape == full.shape
        diff = np.abs(other.astype(int) - full.astype(int))
        print(f"full vs {name}: {int((diff > 0).sum())} pixel values differ, max {int(diff.max())}")
        assert diff.max() > 0, f"{name} is the same experiment as the full method"
