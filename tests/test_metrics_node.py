"""CXRMetrics called directly: report, UI payload, heat map, CSV, CLIP-I and validity."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cxr_pack.cxr_core.metrics.csv_log import CSV_COLUMNS
from cxr_pack.cxr_core.metrics.validity import ValidityClassifier, load_xrv_classifier
from cxr_pack.cxr_core.organ_masks import OrganMasks
from cxr_pack.nodes.metrics import CXRMetrics
from helpers import comfy_folders
from metric_helpers import as_image, demo_pairs, tiny_clip_vision

REPO = Path(__file__).resolve().parents[1]
WORKER_ENV = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))  # workers import the pack with import_pack


@pytest.fixture
def out_dir(tmp_path: Path) -> Iterator[Path]:
    with comfy_folders(output=tmp_path / "output", temp=tmp_path / "temp"):
        yield tmp_path / "output"


def _organs(shape: tuple[int, int]) -> OrganMasks:
    h, w = shape
    right, left, heart = torch.zeros(h, w), torch.zeros(h, w), torch.zeros(h, w)
    right[30:210, 15:115] = 1
    left[30:210, 130:230] = 1
    heart[120:200, 90:160] = 1
    return OrganMasks(("right_lung", "left_lung", "heart"), torch.stack([right, left, heart])[None], (h, w))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_metrics_node_reports_shows_and_logs(out_dir: Path, tmp_path: Path) -> None:
    x0, x1, region = demo_pairs()["lesion"]
    clip = tiny_clip_vision(tmp_path)
    res = CXRMetrics.execute(
        original=as_image(x0),
        counterfactual=as_image(x1),
        target_region=region,
        run_tag="lesion-demo",
        csv_name="runs/demo.csv",
        organ_masks=_organs(tuple(x0.shape)),
        target_organs="right lung",
        clip_vision=clip,
    )
    report_json, heatmap = res.result
    records = json.loads(report_json)
    assert records == res.ui["cxr_metrics"] and len(records) == 1
    json.dumps(res.ui["cxr_metrics"], allow_nan=False)
    rec = records[0]
    assert rec["run_tag"] == "lesion-demo" and rec["schema_version"] == 1
    assert set(rec["ssim_organs"]) == {"left_lung", "heart"}  # the target organ is left out
    assert rec["excluded_organs"] == ["right_lung"]
    assert rec["localisation"] > 0.95 and rec["ssim_outside"] > rec["ssim_inside"]
    assert -1.0 <= rec["clip_i"] <= 1.0
    assert rec["validity"]["available"] is False
    assert rec["validity"]["reason"] == "no validity classifier connected"
    # UI: readable lines and the heat map preview
    assert any(line.startswith("[0] SSIM global") for line in res.ui["text"])
    assert any("CSV: +1 row(s)" in line for line in res.ui["text"])
    assert len(res.ui["images"]) == 1 and res.ui["images"][0]["type"] == "temp"
    # heat map: (1, H, W, 3) in [0, 1] with the cyan region outline and the organ outlines
    assert heatmap.shape == (1, *x0.shape, 3)
    assert 0 <= float(heatmap.min()) and float(heatmap.max()) <= 1
    cyan = (heatmap[0] == torch.tensor([0.0, 1.0, 1.0])).all(-1)
    assert int(cyan.sum()) > 20
    # CSV: header once, one row per image, documented columns
    path = out_dir / "runs" / "demo.csv"
    assert path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = _rows(path)
    assert len(rows) == 1
    assert float(rows[0]["ssim_global"]) == pytest.approx(rec["ssim_global"], rel=1e-12)
    assert rows[0]["ssim_organs"].startswith("left_lung=") and rows[0]["run_tag"] == "lesion-demo"
    assert rows[0]["validity_status"] == "unavailable: no validity classifier connected"


def test_metrics_node_scores_a_batch_image_by_image(out_dir: Path) -> None:
    pairs = demo_pairs()
    x0 = pairs["lesion"][0]
    cfs = torch.stack([pairs[k][1] for k in ("noise", "blur", "lesion")])
    region = pairs["lesion"][2]
    res = CXRMetrics.execute(
        original=as_image(x0),
        counterfactual=as_image(cfs),
        target_region=region,
        run_tag="b",
        csv_name="b.csv",
    )
    recs = res.ui["cxr_metrics"]
    assert [r["image_index"] for r in recs] == [0, 1, 2] and all(r["batch_size"] == 3 for r in recs)
    singles = [
        CXRMetrics.execute(
            original=as_image(x0), counterfactual=as_image(cf), target_region=region, csv_name=""
        )
        for cf in cfs
    ]
    for r, s in zip(recs, singles, strict=True):
        assert r["ssim_global"] == pytest.approx(s.ui["cxr_metrics"][0]["ssim_global"], abs=1e-12)
    assert res.result[1].shape == (3, *x0.shape, 3)
    assert len(_rows(out_dir / "b.csv")) == 3


def test_identical_images_one_channel_against_rgb(out_dir: Path) -> None:
    x0, _, region = demo_pairs()["lesion"]
    res = CXRMetrics.execute(
        original=as_image(x0, 1), counterfactual=as_image(x0, 3), target_region=region, csv_name="same.csv"
    )
    rec = res.ui["cxr_metrics"][0]
    assert rec["ssim_global"] == pytest.approx(1.0, abs=1e-12)
    assert rec["psnr_global_db"] is None and rec["psnr_global_infinite"] is True
    assert rec["localisation"] is None
    assert rec["null_reasons"]["localisation"] == "no change: the images are identical"
    assert (rec["original_channels"], rec["counterfactual_channels"]) == (1, 3)
    row = _rows(out_dir / "same.csv")[0]
    assert row["psnr_global_db"] == "inf" and row["psnr_outside_db"] == "inf" and row["localisation"] == ""
    assert "localisation: no change" in row["notes"]
    fig = res.result[1][0]
    outline = (fig == torch.tensor([0.0, 1.0, 1.0])).all(-1)
    assert int(outline.sum()) > 0
    assert float(fig[~outline].max()) <= 0.4 + 0.6 * 4 / 255 + 1e-6, "no change: the heat layer must be black"


def test_clip_i_of_identical_images_is_one(out_dir: Path, tmp_path: Path) -> None:
    x0, x1, region = demo_pairs()["noise"]
    clip = tiny_clip_vision(tmp_path)
    same = CXRMetrics.execute(
        original=as_image(x0),
        counterfactual=as_image(x0),
        target_region=region,
        csv_name="",
        clip_vision=clip,
    )
    assert same.ui["cxr_metrics"][0]["clip_i"] == pytest.approx(1.0, abs=1e-5)
    other = CXRMetrics.execute(
        original=as_image(x0),
        counterfactual=as_image(torch.rand_like(x1)),
        target_region=region,
        csv_name="",
        clip_vision=clip,
    )
    assert other.ui["cxr_metrics"][0]["clip_i"] < 0.9999


@pytest.mark.parametrize("name", ["../escape.csv", "/tmp/abs.csv", "a/../../b.csv", "C:\\x.csv", "a/./b.csv"])
def test_csv_name_must_stay_in_the_output_folder(out_dir: Path, name: str) -> None:
    x0, x1, region = demo_pairs()["noise"]
    with pytest.raises(ValueError, match="csv_name: expected"):
        CXRMetrics.execute(
            original=as_image(x0), counterfactual=as_image(x1), target_region=region, csv_name=name
        )
    assert not any(out_dir.parent.glob("*.csv")) and not Path("/tmp/abs.csv").exists()


def test_csv_with_foreign_columns_is_refused(out_dir: Path) -> None:
    (out_dir / "old.csv").write_text("a,b,c\n1,2,3\n")
    x0, x1, region = demo_pairs()["noise"]
    with pytest.raises(ValueError, match="exists with different columns"):
        CXRMetrics.execute(
            original=as_image(x0), counterfactual=as_image(x1), target_region=region, csv_name="old"
        )
    assert (out_dir / "old.csv").read_text() == "a,b,c\n1,2,3\n"


def test_empty_csv_name_writes_nothing(out_dir: Path) -> None:
    x0, x1, region = demo_pairs()["noise"]
    CXRMetrics.execute(original=as_image(x0), counterfactual=as_image(x1), target_region=region, csv_name=" ")
    assert not list(out_dir.rglob("*.csv"))


def test_bad_inputs_name_the_input(out_dir: Path) -> None:
    x0, x1, region = demo_pairs()["noise"]
    with pytest.raises(ValueError, match=r"target_region: mask is \(64, 64\)"):
        CXRMetrics.execute(
            original=as_image(x0), counterfactual=as_image(x1), target_region=torch.zeros(64, 64)
        )
    with pytest.raises(ValueError, match="organ_masks: masks are"):
        CXRMetrics.execute(
            original=as_image(x0),
            counterfactual=as_image(x1),
            target_region=region,
            organ_masks=_organs((240, 240)),
        )
    with pytest.raises(ValueError, match=r"target_organs: \['lfet_lung'\] not in organ_masks"):
        CXRMetrics.execute(
            original=as_image(x0),
            counterfactual=as_image(x1),
            target_region=region,
            organ_masks=_organs(tuple(x0.shape)),
            target_organs="lfet lung",
        )
    bad = as_image(x1).clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="counterfactual: contains 1 NaN/Inf"):
        CXRMetrics.execute(original=as_image(x0), counterfactual=bad, target_region=region)
    assert not list(out_dir.rglob("*.csv")), "a refused input must not leave a row behind"


_WORKER = r"""
import sys
from import_pack import import_pack
import_pack()
from cxr_pack.cxr_core.metrics import csv_log
import time
from pathlib import Path
w = int(sys.argv[2])
go = Path(sys.argv[1] + ".go")
while not go.exists():  # start together, so that the appends really overlap
    time.sleep(0.001)
for k in range(10):
    # rows of ~20 kB: each append needs several write() calls, which interleave without the lock
    rec = {"run_tag": f"w{w}-r{k}", "image_index": k, "ssim_global": 0.5,
           "null_reasons": {"clip_i": f"w{w} long reason " * 1200}}
    csv_log.append_records(Path(sys.argv[1]), [rec, dict(rec, image_index=k + 100)])
"""


def test_csv_appends_from_concurrent_processes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "conc.csv"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(path), str(w)], env=WORKER_ENV) for w in range(8)
    ]
    time.sleep(1.0)
    Path(str(path) + ".go").touch()
    assert all(p.wait(timeout=300) == 0 for p in procs)
    lines = path.read_text().splitlines()
    assert lines.count(",".join(CSV_COLUMNS)) == 1 and lines[0] == ",".join(CSV_COLUMNS)
    rows = _rows(path)
    assert len(rows) == 8 * 10 * 2
    assert all(None not in r and len(r) == len(CSV_COLUMNS) for r in rows)
    assert {r["run_tag"] for r in rows} == {f"w{w}-r{k}" for w in range(8) for k in range(10)}
    for r in rows:  # no row holds another writer's text
        w = r["run_tag"].split("-")[0]
        assert r["notes"] == f"clip_i: {f'{w} long reason ' * 1200}"
    tags = [r["run_tag"] for r in rows]
    assert tags[::2] == tags[1::2], "one call's rows must stay adjacent"


def test_a_held_lock_blocks_other_writers(tmp_path: Path) -> None:
    from cxr_pack.cxr_core.metrics.locking import exclusive_lock

    path = tmp_path / "held.csv"
    Path(str(path) + ".go").touch()
    with exclusive_lock(path):
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(path), "0"], env=WORKER_ENV)
        time.sleep(2.0)
        assert proc.poll() is None and not path.exists(), "a writer went ahead while the lock was held"
    assert proc.wait(timeout=120) == 0
    assert len(_rows(path)) == 20


def test_validity_is_unavailable_without_torchxrayvision(tmp_path: Path) -> None:
    if importlib.util.find_spec("torchxrayvision") is not None:
        pytest.skip("torchxrayvision is installed here; this test covers the environment without it")
    weights = tmp_path / "xrv.safetensors"
    weights.write_bytes(b"not checked before the import")
    clf = load_xrv_classifier(weights)
    assert clf.available is False and "torchxrayvision is not installed" in clf.reason


def test_validity_is_unavailable_without_a_weight_file() -> None:
    clf = load_xrv_classifier(None)
    assert clf.available is False
    assert clf.reason in ("no classifier weight file given",) or "torchxrayvision" in clf.reason


class _StandIn(torch.nn.Module):
    """A stand-in classifier (not torchxrayvision): p = sigmoid(mean intensity / 1024) for every label."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, 224, 224) and float(x.min()) >= -1024 and float(x.max()) <= 1024
        return torch.sigmoid(x.mean(dim=(1, 2, 3)) / 1024).unsqueeze(1).expand(-1, 2)


def test_validity_record_through_the_node_with_a_stand_in_classifier(out_dir: Path) -> None:
    x0, x1, region = demo_pairs()["lesion"]
    clf = ValidityClassifier(
        available=True, model=_StandIn(), labels=("Effusion", "Cardiomegaly"), name="stand-in"
    )
    res = CXRMetrics.execute(
        original=as_image(x0),
        counterfactual=as_image(x1),
        target_region=region,
        csv_name="v.csv",
        validity_classifier=clf,
        validity_label="pleural effusion",
    )
    v = res.ui["cxr_metrics"][0]["validity"]
    assert v["available"] is True and v["label"] == "Effusion"
    assert v["p_after"] > v["p_before"]  # the lesion brightens the image
    assert v["delta"] == pytest.approx(v["p_after"] - v["p_before"])
    row = _rows(out_dir / "v.csv")[0]
    assert row["validity_status"] == "ok" and float(row["validity_delta"]) == pytest.approx(v["delta"])
    with pytest.raises(ValueError, match="validity_label: 'pneumothorax' is not a label"):
        CXRMetrics.execute(
            original=as_image(x0),
            counterfactual=as_image(x1),
            target_region=region,
            validity_classifier=clf,
            validity_label="pneumothorax",
        )
