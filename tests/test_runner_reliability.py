"""The runner never records a half-run row as ok, and its results store survives shared folders and kills."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from cxr_pack.cxr_runner.cli import main
from cxr_pack.cxr_runner.client import ComfyClient
from cxr_pack.cxr_runner.jobs import Job, run_job
from cxr_pack.cxr_runner.outputs import IncompleteOutputs, check_outputs, missing_outputs, output_nodes
from cxr_pack.cxr_runner.results import ResultStore, read_results_csv
from filelock import FileLock
from runner_helpers import empty_image_workflow, image_metrics_workflow

OUTPUT_CLASSES = {"SaveImage", "CXRMetrics", "PreviewImage"}


def _record(index: int, status: str = "ok") -> dict:
    return {"run_id": "r", "row_index": index, "row_key": f"key{index}", "row": {"seed": str(index)},
            "status": status, "attempts": 1, "outputs": [f"key{index}/a.png"], "metrics": []}  # fmt: skip


def test_every_output_node_must_have_produced_its_output() -> None:
    api = image_metrics_workflow(blur=True)
    expected = output_nodes(api, OUTPUT_CLASSES.__contains__)
    assert expected == ["4", "5"], "CXRMetrics and SaveImage are the outputs; loaders and the blur are not"
    whole = {
        "outputs": {"4": {"cxr_metrics": [{"ssim_global": 0.9}]}, "5": {"images": [{"filename": "a.png"}]}}
    }
    assert missing_outputs(api, whole, expected) == []
    check_outputs(api, whole, expected, "p1")
    no_metrics = {"outputs": {"5": {"images": [{"filename": "a.png"}]}, "4": {"cxr_metrics": []}}}
    assert missing_outputs(api, no_metrics, expected) == [
        "node 4 'Metrics' (CXRMetrics) produced no 'cxr_metrics'"
    ]
    with pytest.raises(IncompleteOutputs, match=r"prompt p2 finished without all its outputs: node 4 'Metrics'.*"
                       r"node 5 'Save' \(SaveImage\) produced no 'images'"):  # fmt: skip
        check_outputs(api, {"outputs": {}}, expected, "p2")
    api["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    assert missing_outputs(api, whole, ["9"]) == ["node 9 'PreviewImage' (PreviewImage) produced nothing"]


@pytest.mark.server
def test_a_prompt_with_one_invalid_node_is_a_failed_row_and_runs_again(comfy_server, tmp_path: Path) -> None:
    # ComfyUI answers HTTP 200, lists the bad save node in node_errors and runs the valid one
    api = empty_image_workflow(prefix="partial")
    api["3"] = {"class_type": "EmptyImage", "_meta": {"title": "Bad canvas"},
                "inputs": {"width": 0, "height": 32, "batch_size": 1, "color": 7}}  # fmt: skip
    api["4"] = {"class_type": "SaveImage", "_meta": {"title": "Save bad"},
                "inputs": {"images": ["3", 0], "filename_prefix": "partial_bad"}}  # fmt: skip
    job = Job(workflow=api, out_dir=tmp_path, servers=[comfy_server.base_url], retries=0, show_progress=False)
    report = run_job(job, [{}])
    assert report.counts["ok"] == 0 and report.counts["failed"] == 1
    (rec,) = ResultStore(tmp_path).records()
    assert rec["status"] == "failed" and "node_errors" in rec["error"] and "node 3" in rec["error"], rec[
        "error"
    ]
    assert rec["prompt_id"], "the partly queued prompt is named (and was cancelled)"
    assert ResultStore(tmp_path).finished() == set(), "a resume runs the row again"
    api["3"]["inputs"]["width"] = 16
    assert run_job(Job(workflow=api, out_dir=tmp_path / "fixed", servers=[comfy_server.base_url],
                       show_progress=False), [{}]).counts["ok"] == 1  # fmt: skip


@pytest.mark.server
def test_cli_exits_1_when_the_metrics_node_is_invalid(comfy_server, tmp_path: Path) -> None:
    wf = tmp_path / "wf.json"
    api = image_metrics_workflow(blur=False, prefix="nometrics")
    api["1"] = {"class_type": "EmptyImage", "_meta": {"title": "Radiograph"},
                "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 99}}  # fmt: skip
    api["2"] = {
        "class_type": "SolidMask",
        "_meta": {"title": "Region"},
        "inputs": {"value": 1.0, "width": 32, "height": 32},
    }
    wf.write_text(json.dumps(api))
    argv = ["run", str(wf), "--server", comfy_server.base_url, "--quiet", "--out", str(tmp_path / "out"),
            "--retries", "0"]  # fmt: skip
    # the case: one out-of-range value starves the metrics node; the save node still runs
    assert main([*argv, "--set", "Region.width=0"]) == 1
    (line,) = read_results_csv(tmp_path / "out")
    assert line["status"] == "failed" and "node 2 (SolidMask)" in line["error"], line["error"]
    assert main(argv) == 0 and [x["status"] for x in read_results_csv(tmp_path / "out")] == ["failed", "ok"]


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.append(_record(0))
    with store.jsonl.open("a") as fh:  # a writer killed halfway through its line
        fh.write(json.dumps(_record(1))[:40])
    store.append(_record(2))
    assert [r["row_index"] for r in store.records()] == [0, 2]
    assert store.finished() == {"key0", "key2"}
    assert [x["row_index"] for x in read_results_csv(store.write_csv())] == ["0", "2"]


def test_results_csv_is_built_inside_the_lock(tmp_path: Path) -> None:
    """A shard's rewrite of results.csv waits for a writer holding the lock and then includes its record."""
    store = ResultStore(tmp_path)
    store.append(_record(0))
    with FileLock(str(store.jsonl) + ".lock"), store.jsonl.open("a") as fh:  # another shard, mid-append
        writer = threading.Thread(target=store.write_csv)
        writer.start()
        time.sleep(0.3)
        fh.write(json.dumps(_record(1)) + "\n")
        fh.flush()
    writer.join(10)
    assert sorted(x["row_index"] for x in read_results_csv(tmp_path)) == ["0", "1"], (
        "a table built from the snapshot before the other shard's append would lack row 1"
    )


@pytest.mark.server
def test_a_finished_prompt_without_its_image_is_not_ok(comfy_server, tmp_path: Path, monkeypatch) -> None:
    """No node_errors, status success, but the save node's images are missing from the history entry."""
    real_wait = ComfyClient.wait

    def wait_losing_images(self, prompt_id: str, *args, **kwargs) -> dict:
        entry = real_wait(self, prompt_id, *args, **kwargs)
        entry["outputs"].pop("2", None)
        return entry

    monkeypatch.setattr(ComfyClient, "wait", wait_losing_images)
    api = empty_image_workflow(prefix="lost")
    api["1"]["inputs"]["color"] = 4242
    job = Job(workflow=api, out_dir=tmp_path, servers=[comfy_server.base_url], retries=0, show_progress=False)
    assert run_job(job, [{}]).counts["failed"] == 1
    (rec,) = ResultStore(tmp_path).records()
    assert "node 2 'Save' (SaveImage) produced no 'images'" in rec["error"] and rec["outputs"] == []
