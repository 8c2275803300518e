"""Ablation studies: aggregation math, the markdown table, the Pillow chart, study files, and a study on the server."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from cxr_pack.cxr_runner.aggregate import Stat, aggregate, markdown, summarize
from cxr_pack.cxr_runner.charts import bar_chart, colour
from cxr_pack.cxr_runner.cli import main
from cxr_pack.cxr_runner.errors import RunnerError
from cxr_pack.cxr_runner.study import load_study
from PIL import Image
from runner_helpers import image_metrics_workflow, write_manifest


def _fake_results(path: Path, values: list[tuple[str, dict[str, object]]]) -> Path:
    """A results.csv as the runner writes it: status and metric.* columns, one line per image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["run_id", "row_index", "row_key", "status", "image_index"]
    columns += sorted({f"metric.{k}" for _, m in values for k in m})
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, restval="")
        w.writeheader()
        for i, (status, metrics) in enumerate(values):
            w.writerow({"run_id": "r", "row_index": i, "row_key": f"k{i}", "status": status, "image_index": 0,
                        **{f"metric.{k}": v for k, v in metrics.items()}})  # fmt: skip
    return path


def test_summary_is_mean_and_sample_std() -> None:
    vals = [0.91, 0.85, 0.88, 0.79]
    s = summarize(vals)
    assert s.mean == pytest.approx(statistics.mean(vals), abs=1e-15)
    assert s.std == pytest.approx(statistics.stdev(vals), abs=1e-15)
    assert s.std == pytest.approx(float(np.std(vals, ddof=1)), abs=1e-15)
    assert (s.n, s.non_finite) == (4, 0)
    assert summarize([0.5]) == Stat(0.5, None, 1, 0), "one value has no standard deviation"
    assert summarize([1.0, math.inf, 3.0]) == Stat(2.0, math.sqrt(2.0), 2, 1), (
        "infinite values are left out, counted"
    )
    assert summarize([]) is None and summarize([math.inf]) is None


def test_aggregate_a_fake_results_csv_into_a_paper_table(tmp_path: Path) -> None:
    _fake_results(tmp_path / "full" / "results.csv", [
        ("ok", {"ssim_outside": 0.9, "mae_outside": 0.02, "psnr_global_db": "inf", "localisation": 0.8, "height": 64}),
        ("ok", {"ssim_outside": 0.7, "mae_outside": 0.04, "psnr_global_db": 30.0, "localisation": "", "height": 64}),
        ("failed", {"ssim_outside": 0.0}),
    ])  # fmt: skip
    _fake_results(tmp_path / "no gate" / "results.csv", [
        ("ok", {"ssim_outside": 0.5, "mae_outside": 0.06, "psnr_global_db": 20.0, "localisation": 0.4, "height": 64}),
        ("ok", {"ssim_outside": 0.6, "mae_outside": 0.01, "psnr_global_db": 22.0, "localisation": 0.5, "height": 64}),
    ])  # fmt: skip
    lines = {
        name: list(csv.DictReader((tmp_path / name / "results.csv").open())) for name in ("full", "no gate")
    }
    table = aggregate(lines)
    assert list(table["full"]) == ["ssim_outside", "psnr_global_db", "mae_outside", "localisation"], (
        "the usual metrics in their order; bookkeeping columns (height) are not metrics"
    )
    assert table["full"]["ssim_outside"].mean == pytest.approx(0.8)
    assert table["full"]["ssim_outside"].std == pytest.approx(math.sqrt(0.02)), "failed rows do not count"
    assert table["full"]["psnr_global_db"] == Stat(30.0, None, 1, 1)
    assert table["full"]["localisation"] == Stat(0.8, None, 1, 0)
    md = markdown(table, rows={"full": 2, "no gate": 2})
    head, rule, row_full, row_nogate = md.splitlines()[:4]
    assert head == "| variant | n | ssim_outside ↑ | psnr_global_db ↑ | mae_outside ↓ | localisation ↑ |"
    assert rule == "|---|---:|---:|---:|---:|---:|"
    assert row_full == (
        "| full | 2 | **0.8000 ± 0.1414** | **30.0000 (n=1)** | **0.0300 ± 0.0141** | **0.8000 (n=1)** |"
    )
    assert row_nogate.startswith(
        "| no gate | 2 | 0.5500 ± 0.0707 | 21.0000 ± 1.4142 | 0.0350 ± 0.0354 | 0.4500 ± 0.0707 |"
    )
    assert "full: psnr_global_db had 1 infinite values, left out" in md
    assert list(aggregate(lines, ["localisation", "clip_i"])["full"]) == ["localisation"], (
        "asked-for metrics only"
    )


def test_chart_draws_a_bar_per_variant_and_metric(tmp_path: Path) -> None:
    table = {
        "full": {"ssim_outside": Stat(0.8, 0.1, 4), "mae_outside": Stat(-0.02, 0.01, 4)},
        "no gate": {"ssim_outside": Stat(0.6, None, 1)},
        "SDEdit": {"ssim_outside": Stat(0.0, 0.0, 4), "mae_outside": Stat(0.05, 0.0, 4)},
    }
    path = bar_chart(table, tmp_path / "sub" / "chart.png", title="test study")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (600, 24 + 230 + 8 + 3 * 16)
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for j in range(3):
        count = int((pixels == np.array(colour(j))).all(axis=1).sum())
        assert count > 100, f"variant {j}'s colour is drawn (bars and legend): {count} pixels"


def test_aggregate_command_tabulates_results_files_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _fake_results(
        tmp_path / "runs" / "full" / "results.csv",
        [("ok", {"ssim_global": 0.9}), ("ok", {"ssim_global": 0.7})],
    )
    _fake_results(tmp_path / "runs" / "sdedit" / "results.csv", [("ok", {"ssim_global": 0.5})])
    out = tmp_path / "table"
    assert (
        main(
            [
                "aggregate",
                str(a),
                f"plain SDEdit={tmp_path / 'runs' / 'sdedit'}",
                "--out",
                str(out),
                "--title",
                "T",
            ]
        )
        == 0
    )
    md = (out / "study.md").read_text()
    assert (
        md.startswith("# T\n")
        and "| full | 2 | **0.8000 ± 0.1414** |" in md
        and "| plain SDEdit | 1 | 0.5000 |" in md
    )
    assert md in capsys.readouterr().out
    with (out / "study.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["variant"] == "full" and float(rows[0]["std"]) == pytest.approx(math.sqrt(0.02))
    assert (out / "study.png").stat().st_size > 0
    assert main(["aggregate", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_study_file_and_flags(tmp_path: Path) -> None:
    spec = {"manifest": "rows.csv", "map": {"seed": "Sampler.seed"}, "set": {"Sampler.steps": 3},
            "variants": {"full": "wf/full.json", "PIE": {"workflow": "wf/pie.json", "map": {"seed": "Sampler round 1.seed"}}},
            "metrics": ["ssim_outside"]}  # fmt: skip
    (tmp_path / "study.json").write_text(json.dumps(spec))
    study = load_study(tmp_path / "study.json", variants=["extra=x.json"], map_items=["seed=Other.seed"])
    assert study.manifest == tmp_path / "rows.csv"
    assert [(v.name, v.workflow) for v in study.variants] == [
        ("full", tmp_path / "wf/full.json"), ("PIE", tmp_path / "wf/pie.json"), ("extra", Path("x.json"))]  # fmt: skip
    assert [str(t) for t in study.mapping["seed"]] == ["Sampler.seed", "Other.seed"]
    assert [str(t) for t in study.variants[1].mapping["seed"]] == ["Sampler round 1.seed"]
    assert [(str(o.target), o.value) for o in study.overrides] == [("Sampler.steps", 3)]
    assert study.metrics == ["ssim_outside"]
    with pytest.raises(RunnerError, match="no variants"):
        load_study(None, manifest=tmp_path / "rows.csv")
    with pytest.raises(RunnerError, match="variant names must differ"):
        load_study(None, manifest=tmp_path / "rows.csv", variants=["a b=x.json", "a_b=y.json"])


@pytest.mark.server
def test_study_runs_two_variants_on_the_server_and_tabulates(comfy_server, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        grey = (rng.random((64, 64)) * 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / f"study_film{i}.png")
        region = np.zeros((64, 64), np.uint8)
        region[8 + 8 * i : 40, 10:50] = 255
        Image.fromarray(region).save(tmp_path / f"study_region{i}.png")
        rows.append(
            {"image": f"study_film{i}.png", "masks": f"study_region{i}.png", "extent": 0.5 + i, "seed": i}
        )
    write_manifest(tmp_path / "rows.csv", rows)
    for name, blur in (("identity", False), ("blur", True)):
        (tmp_path / f"{name}.json").write_text(
            json.dumps(image_metrics_workflow(blur, prefix=f"study_{name}"))
        )
    study = {"manifest": "rows.csv", "title": "identity vs blur",
             "map": {"image": "Radiograph.image", "masks": "Region.image", "extent": "Blur.sigma"},
             "variants": {"identity": "identity.json", "blur (sigma)": "blur.json"},
             "metrics": ["ssim_global", "ssim_outside", "mae_global", "localisation"]}  # fmt: skip
    (tmp_path / "study.json").write_text(json.dumps(study))
    out = tmp_path / "out"
    argv = [
        "study",
        str(tmp_path / "study.json"),
        "--server",
        comfy_server.base_url,
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    md = (out / "study.md").read_text()
    assert md.startswith("# identity vs blur")
    assert "| identity | 2 | **1.0000 ± 0.0000** | **1.0000 ± 0.0000** | **0.0000 ± 0.0000** | n/a |" in md, (
        md
    )
    (blur_line,) = [line for line in md.splitlines() if line.startswith("| blur (sigma) | 2 |")]
    ssim_blur = float(blur_line.split("|")[3].split("±")[0])
    assert 0.0 < ssim_blur < 0.9, "blurring noise lowers SSIM"
    with Image.open(out / "study.png") as im:
        assert im.format == "PNG"
    with (out / "blur__sigma_" / "results.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    assert sorted(float(line["row.extent"]) for line in lines) == [0.5, 1.5]
    assert all(line["metric.run_tag"] == "blur" and line["outputs"] for line in lines)
    uploaded = sorted(p.name for p in Path(comfy_server.input_dir, "cxr_runner").rglob("study_*.png"))
    assert uploaded == ["study_film0.png", "study_film1.png", "study_region0.png", "study_region1.png"], (
        "each local file uploaded once"
    )
    # a second study run finds every row done and queues nothing
    assert main(argv) == 0
    assert all(
        json.loads(x)["status"] == "ok" for x in (out / "identity" / "results.jsonl").read_text().splitlines()
    )
    assert len((out / "identity" / "results.jsonl").read_text().splitlines()) == 2
