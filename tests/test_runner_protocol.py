"""The paper's protocol end to end on a synthetic CheXpert folder: dataset -> manifest -> study -> report.

The variants are small stand-ins for the diffusion workflows (a diffusion
model on the CPU would take minutes per film), built from this pack's real
nodes: CXRImageLoader, OrganMaskLoader reading the builder's one-row CheXmask
CSVs, PathologySpatialPrior from the manifest's pathology/side/extent,
CXRMetrics, and save nodes titled as in ``example_workflows/``. The edit is an
opacity: the film blended towards white, inside the prior ("full", "weak") or
everywhere ("no prior").
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cxr_pack.cxr_runner.cli import main
from cxr_pack.cxr_runner.datasets.command import MAP
from cxr_pack.cxr_runner.results import ResultStore
from dataset_helpers import make_chexpert
from PIL import Image


def opacity_workflow(strength: float, inside_prior: bool, name: str) -> dict:
    wf = {
        "1": {"class_type": "CXRImageLoader", "_meta": {"title": "Radiograph"},
              "inputs": {"image": "x.jpg", "working_size": 64, "resize_mode": "letterbox", "intensity": "auto", "invert": False}},
        "2": {"class_type": "OrganMaskLoader", "_meta": {"title": "Organ masks"},
              "inputs": {"source": "label_map", "path": "x.csv", "legend": "auto", "legend_json": "", "image_id": "",
                         "min_quality": 0.7, "seg_model": "chestx_det_pspnet", "organs": "all", "mask_mode": "binary",
                         "threshold": 0.5, "geometry": ["1", 1], "image": ["1", 0]}},
        "3": {"class_type": "PathologySpatialPrior", "_meta": {"title": "Spatial prior"},
              "inputs": {"pathology": "effusion", "side": "left", "extent": 0.35, "feather_px": 2.0, "zone": "lower",
                         "organ_masks": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "EmptyImage", "_meta": {"title": "White"},
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0xFFFFFF}},
        "5": {"class_type": "ImageBlend", "_meta": {"title": "Opacity"},
              "inputs": {"image1": ["1", 0], "image2": ["4", 0], "blend_factor": strength, "blend_mode": "normal"}},
        "6": {"class_type": "ImageCompositeMasked", "_meta": {"title": "Inside prior"},
              "inputs": {"destination": ["1", 0], "source": ["5", 0], "x": 0, "y": 0, "resize_source": False, "mask": ["3", 0]}},
        "7": {"class_type": "CXRMetrics", "_meta": {"title": "Metrics"},
              "inputs": {"original": ["1", 0], "counterfactual": ["6", 0] if inside_prior else ["5", 0],
                         "target_region": ["3", 0], "run_tag": name, "csv_name": "", "organ_masks": ["2", 0],
                         "target_organs": "left_lung", "validity_label": ""}},
        "8": {"class_type": "SaveImage", "_meta": {"title": "Save counterfactual"},
              "inputs": {"images": ["6", 0] if inside_prior else ["5", 0], "filename_prefix": f"cxr/{name}"}},
        "9": {"class_type": "SaveImage", "_meta": {"title": "Save difference map"}, "inputs": {"images": ["7", 1], "filename_prefix": "cxr/difference"}},
        "10": {"class_type": "SaveImage", "_meta": {"title": "Save prior overlay"}, "inputs": {"images": ["3", 1], "filename_prefix": "cxr/prior"}},
    }  # fmt: skip
    if not inside_prior:
        del wf["6"]
    return wf


@pytest.mark.server
def test_dataset_to_study_to_report_on_a_synthetic_chexpert_folder(comfy_server, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    top, chexmask = make_chexpert(tmp_path / "data")
    folder = tmp_path / "study"
    assert main(["dataset", "chexpert", str(top), "--chexmask", str(chexmask), "--out", str(folder),
                 "--pathologies", "effusion,cardiomegaly", "--sides", "left,right", "--extents", "0.3,0.6",
                 "--seed", "1"]) == 0  # fmt: skip
    variants = {"full": (0.5, True), "weak": (0.2, True), "no prior": (0.5, False)}
    for name, (strength, inside) in variants.items():
        (folder / f"{name}.json").write_text(
            json.dumps(opacity_workflow(strength, inside, name.replace(" ", "_")))
        )
    study = json.loads((folder / "study.json").read_text())
    columns = ("image", "masks", "mask_id", "pathology", "side", "extent", "target_organs")
    study.update(map={c: MAP[c] for c in columns}, variants={n: f"{n}.json" for n in variants},
                 title="Synthetic CheXpert, opacity stand-ins", metrics=["ssim_outside", "ssim_inside", "mae_outside",
                                                                         "localisation"])  # fmt: skip
    (folder / "study.json").write_text(json.dumps(study))
    out = tmp_path / "runs"
    argv = ["study", str(folder / "study.json"), "--server", comfy_server.base_url, "--quiet", "--out", str(out),
            "--pictures", "4", "--boot", "1000"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr()
    said = capsys.readouterr().out
    assert "full: 8 ok, 0 failed" in said and "## Paired against 'full' (same rows and images)" in said
    for name in ("full", "weak", "no_prior"):
        recs = ResultStore(out / name).records()
        assert len(recs) == 8 and all(r["status"] == "ok" and len(r["metrics"]) == 1 for r in recs)
        assert {r["output_titles"][p] for r in recs for p in r["outputs"]} == {
            "Save counterfactual", "Save difference map", "Save prior overlay"}  # fmt: skip
    with (out / "paired.csv").open() as fh:
        paired = {(r["metric"], r["variant"]): r for r in csv.DictReader(fh)}
    no_prior = paired[("ssim_outside", "no prior")]
    assert (
        no_prior["n_pairs"] == "8"
        and float(no_prior["mean_diff"]) < 0
        and float(no_prior["rank_biserial"]) == -1.0
    )
    assert float(no_prior["p"]) == pytest.approx(2 / 256), (
        "8 of 8 rows lower outside the prior: exact p = 2/2^8"
    )
    weak = paired[("mae_outside", "weak")]
    assert abs(float(weak["mean_diff"])) < 0.01, "both edits stay inside the prior"
    assert float(paired[("ssim_inside", "weak")]["mean_diff"]) > 0, "the weaker edit changes the region less"
    with Image.open(out / "pictures.png") as im:
        assert im.size == (180 + 160 * 5, 18 + 2 * 178 * 4), (
            "4 rows: original, prior, 3 variants; two lines each"
        )
        assert len(np.unique(np.asarray(im.convert("L")))) > 50, "pictures, not empty tiles"
    page = (out / "report.html").read_text()
    assert all(f"<img src='{f}'" in page for f in ("study.png", "paired.png", "pictures.png"))
    report_md = (out / "report.md").read_text()
    assert (
        report_md.startswith("# Synthetic CheXpert, opacity stand-ins")
        and "![pictures](pictures.png)" in report_md
    )
    # a shard of a cluster run leaves the report to the report command (the other shards may still run)
    before = (out / "study.md").stat().st_mtime_ns
    assert main([*argv, "--shard", "1/2"]) == 0
    said = capsys.readouterr().out
    assert "full: 0 ok, 0 failed, 4 skipped" in said and f"shard 1/2 done; when every shard has finished: " \
        f"cxr-runner report {out}" in said  # fmt: skip
    assert (out / "study.md").stat().st_mtime_ns == before
    # the report command gives the same tables again from the folder
    assert main(["report", str(out), "--pictures", "2", "--images-dir", str(folder), "--boot", "1000", "--metrics",
                 "ssim_outside,ssim_inside,mae_outside,localisation", "--by", "pathology"]) == 0  # fmt: skip
    with (out / "paired.csv").open() as fh:
        again = {(r["metric"], r["variant"]): r for r in csv.DictReader(fh)}
    assert len(again) == 4 * 3 and again[("ssim_outside", "no_prior")]["p"] == no_prior["p"], "folder names"
    assert again[("localisation", "weak")]["p"] == "", (
        "same region, same localisation: no test on float noise"
    )
