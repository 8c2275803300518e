"""The headless runner: overrides, manifests (resume, shards, retries) and studies, against the real server."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cxr_pack.cxr_runner.cli import main
from cxr_pack.cxr_runner.manifest import ResultStore, parse_shard, row_key, shard_rows
from cxr_pack.cxr_runner.overrides import apply_overrides, parse_override
from cxr_pack.cxr_runner.study import aggregate, chart, markdown
from cxr_pack.cxr_runner.workflow_format import WorkflowFormatError
from helpers import core_txt2img_workflow

TITLES = {"1": "Checkpoint", "2": "Positive prompt", "5": "Sampler", "7": "Save"}


def _workflow(ckpt: str, with_metrics: bool = False) -> dict:
    wf = core_txt2img_workflow(ckpt, size=64, steps=1, prefix="runner")
    for nid, title in TITLES.items():
        wf[nid]["_meta"] = {"title": title}
    if with_metrics:
        wf["8"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
        wf["9"] = {"class_type": "CXRMetrics", "_meta": {"title": "Metrics"},
                   "inputs": {"original": ["6", 0], "counterfactual": ["6", 0], "target_region": ["8", 0],
                              "run_tag": "", "csv_name": ""}}  # fmt: skip
    return wf


def test_overrides_by_title_and_errors() -> None:
    wf = _workflow("x.safetensors")
    title, name, value = parse_override("Sampler.steps=7")
    out = apply_overrides(wf, [(title, name, value), parse_override("Positive prompt.text=a (b:1.2)")])
    assert out["5"]["inputs"]["steps"] == 7 and out["2"]["inputs"]["text"] == "a (b:1.2)"
    assert wf["5"]["inputs"]["steps"] == 1, "the input workflow is not modified"
    with pytest.raises(WorkflowFormatError, match="titles in this workflow: .*Sampler"):
        apply_overrides(wf, [parse_override("Sampler2.steps=1")])
    with pytest.raises(WorkflowFormatError, match="inputs: .*seed"):
        apply_overrides(wf, [parse_override("Sampler.stepz=1")])


def test_shards_partition_rows_and_keys_are_stable() -> None:
    rows = [{"seed": str(i)} for i in range(10)]
    parts = [shard_rows(rows, parse_shard(f"{i}/3")) for i in range(3)]
    indices = sorted(k for p in parts for k, _ in p)
    assert indices == list(range(10))
    assert row_key(rows[0], {"a": 1}) == row_key({"seed": "0"}, {"a": 1}) != row_key(rows[1], {"a": 1})
    with pytest.raises(ValueError, match="need 0 <= i < n"):
        parse_shard("3/3")


def test_aggregate_mean_std_table_and_chart(tmp_path: Path) -> None:
    per_variant = {"full": [{"ssim_outside": 0.9, "localisation": 0.8}, {"ssim_outside": 0.7, "localisation": None}],
                   "no gate": [{"ssim_outside": 0.5}]}  # fmt: skip
    table = aggregate(per_variant)
    mean, std, n = table["full"]["ssim_outside"]
    assert (round(mean, 6), round(std, 6), n) == (0.8, round(2**0.5 * 0.1, 6), 2)
    assert table["full"]["localisation"] == (0.8, 0.0, 1)
    md = markdown(table)
    assert "| full | 2 |" in md and "0.8000 ± 0.1414" in md and "n/a" in md
    chart(table, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def _manifest(path: Path, n: int = 4, bad: int | None = None) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "masks", "pathology", "side", "extent", "seed", "steps"])
        for i in range(n):
            w.writerow(["", "", "effusion", "left", "0.35", str(100 + i), "-1" if i == bad else "1"])
    return path


def _history_count(client) -> int:
    return len(client.get_json("/history?max_items=10000"))


@pytest.mark.server
@pytest.mark.checkpoint
def test_manifest_resume_shards_and_retries(
    comfy_server, comfy_client, random_checkpoint, tmp_path: Path
) -> None:
    wf_path = tmp_path / "wf.json"
    wf_path.write_text(json.dumps(_workflow(random_checkpoint.name)))
    manifest = _manifest(tmp_path / "rows.csv")
    base = ["manifest", str(wf_path), str(manifest), "--server", comfy_server.base_url, "--quiet",
            "--map", "seed=Sampler.seed"]  # fmt: skip
    before = _history_count(comfy_client)
    assert main([*base, "--out", str(tmp_path / "all")]) == 0
    assert _history_count(comfy_client) == before + 4
    records = ResultStore(tmp_path / "all").latest()
    assert sorted(r["index"] for r in records.values()) == [0, 1, 2, 3]
    assert all(
        r["status"] == "ok" and r["outputs"] and Path(r["outputs"][0]).is_file() for r in records.values()
    )
    # resume: nothing left to do, nothing queued
    assert main([*base, "--out", str(tmp_path / "all")]) == 0
    assert _history_count(comfy_client) == before + 4
    # shards into one folder: the union is exactly the four rows
    for shard in ("0/2", "1/2"):
        assert main([*base, "--out", str(tmp_path / "sharded"), "--shard", shard]) == 0
    recs = ResultStore(tmp_path / "sharded").records()
    assert sorted(r["index"] for r in recs) == [0, 1, 2, 3]
    assert len({r["key"] for r in recs}) == 4
    with (tmp_path / "sharded" / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 4
    # a row the server rejects is retried, then recorded as failed; the others still run
    bad = _manifest(tmp_path / "bad.csv", bad=2)
    code = main(["manifest", str(wf_path), str(bad), "--server", comfy_server.base_url, "--quiet", "--retries", "1",
                 "--map", "seed=Sampler.seed", "--map", "steps=Sampler.steps", "--out", str(tmp_path / "bad")])  # fmt: skip
    assert code == 1
    latest = ResultStore(tmp_path / "bad").latest()
    failed = [r for r in latest.values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["index"] == 2 and failed[0]["attempts"] == 2
    assert "steps" in failed[0]["error"]
    assert sum(r["status"] == "ok" for r in latest.values()) == 3


@pytest.mark.server
@pytest.mark.checkpoint
def test_study_runs_variants_and_tabulates(comfy_server, random_checkpoint, tmp_path: Path) -> None:
    for name, steps in (("one_step", 1), ("two_steps", 2)):
        wf = _workflow(random_checkpoint.name, with_metrics=True)
        wf["5"]["inputs"]["steps"] = steps
        (tmp_path / f"{name}.json").write_text(json.dumps(wf))
    _manifest(tmp_path / "rows.csv", n=2)
    study = {"manifest": "rows.csv", "map": {"seed": "Sampler.seed"},
             "variants": {"one step": "one_step.json", "two steps": "two_steps.json"}}  # fmt: skip
    (tmp_path / "study.json").write_text(json.dumps(study))
    out = tmp_path / "out"
    assert main(["study", str(tmp_path / "study.json"), "--server", comfy_server.base_url, "--quiet",
                 "--out", str(out)]) == 0  # fmt: skip
    md = (out / "study.md").read_text()
    assert "| one step | 2 |" in md and "| two steps | 2 |" in md
    assert (out / "study.png").is_file()


def test_ui_workflow_is_refused_with_advice(tmp_path: Path) -> None:
    ui = Path(__file__).resolve().parents[1] / "example_workflows" / "cxr_counterfactual_full.json"
    assert main(["run", str(ui), "--server", "http://127.0.0.1:9", "--out", str(tmp_path)]) == 2
