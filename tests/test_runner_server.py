"""The headless runner against the real ComfyUI server: resume, shards, retries, uploads, servers, progress."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cxr_pack.cxr_runner.cli import main
from cxr_pack.cxr_runner.jobs import Job, run_job
from cxr_pack.cxr_runner.manifest import parse_mapping, read_manifest
from cxr_pack.cxr_runner.overrides import parse_override
from cxr_pack.cxr_runner.results import ResultStore, read_results_csv
from cxr_pack.cxr_runner.server import free_port
from PIL import Image
from runner_helpers import empty_image_workflow, image_metrics_workflow, runner_workflow, write_manifest


def _history_count(client) -> int:
    return len(client.get_json("/history?max_items=10000"))


def _by_run(records: list[dict]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for r in records:
        runs.setdefault(r["run_id"], []).append(r)
    return runs


@pytest.mark.server
@pytest.mark.checkpoint
def test_manifest_of_four_rows_resumes_shards_and_retries(
    comfy_server, comfy_client, random_checkpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(runner_workflow(random_checkpoint.name)))
    rows = [{"image": "", "masks": "", "pathology": "effusion", "side": side, "extent": 0.35, "seed": 100 + i,
             "prompt": f"chest x-ray, {side} pleural effusion", "steps": 1}
            for i, side in enumerate(("left", "right", "left", "right"))]  # fmt: skip
    out = tmp_path / "out"

    def run(manifest: Path, *extra: str) -> tuple[int, str]:
        code = main(["manifest", str(wf), str(manifest), "--server", comfy_server.base_url, "--quiet", "--out",
                     str(out), "--retry-delay", "0", "--map", "seed=Sampler.seed", "--map", "prompt=Positive prompt.text",
                     "--map", "steps=Sampler.steps", *extra])  # fmt: skip
        return code, capsys.readouterr().out

    before = _history_count(comfy_client)
    # two shards into one folder, as two array tasks would: together exactly the four rows
    manifest = write_manifest(tmp_path / "rows.csv", rows)
    assert run(manifest, "--shard", "0/2") == (0, f"2 ok, 0 failed; results in {out / 'results.csv'}\n")
    assert run(manifest, "--shard", "1/2")[0] == 0
    records = ResultStore(out).records()
    assert sorted(sorted(r["row_index"] for r in rs) for rs in _by_run(records).values()) == [[0, 2], [1, 3]]
    assert (
        sorted(r["row_index"] for r in records) == [0, 1, 2, 3] and len({r["row_key"] for r in records}) == 4
    )
    assert all(r["status"] == "ok" and r["attempts"] == 1 for r in records)
    assert len({r["prompt_id"] for r in records}) == 4
    assert _history_count(comfy_client) == before + 4
    for r in records:
        (png,) = r["outputs"]
        with Image.open(out / png) as im:
            assert im.size == (64, 64)
    lines = read_results_csv(out)
    assert sorted((int(x["row_index"]), x["row.seed"], x["status"]) for x in lines) == [
        (i, str(100 + i), "ok") for i in range(4)]  # fmt: skip
    # a rerun of the whole manifest finds every row done and queues nothing
    assert run(manifest) == (0, f"0 ok, 0 failed, 4 skipped; results in {out / 'results.csv'}\n")
    assert _history_count(comfy_client) == before + 4
    assert len(ResultStore(out).records()) == 4
    # a row the server refuses (steps -1) is tried 1 + 2 times, recorded as failed, and the next row still runs
    rows[1]["steps"] = -1
    rows[3]["seed"] = 999
    code, said = run(write_manifest(tmp_path / "rows2.csv", rows), "--retries", "2")
    assert code == 1 and said.startswith("1 ok, 1 failed, 2 skipped")
    new = [r for r in ResultStore(out).records() if r not in records]
    assert {r["row_index"]: r["status"] for r in new} == {1: "failed", 3: "ok"}
    (failed,) = [r for r in new if r["status"] == "failed"]
    assert failed["attempts"] == 3 and "steps" in failed["error"] and "KSampler" in failed["error"]
    assert _history_count(comfy_client) == before + 5, "the refused prompt never ran"
    statuses = sorted((int(x["row_index"]), x["status"]) for x in read_results_csv(out))
    assert statuses == [(0, "ok"), (1, "failed"), (1, "ok"), (2, "ok"), (3, "ok"), (3, "ok")], (
        "results.csv keeps one line per row version (the old rows 1 and 3 stay valid for their cells)"
    )


@pytest.mark.server
@pytest.mark.checkpoint
def test_a_prompt_past_its_timeout_is_cancelled_and_recorded(comfy_server, comfy_client, random_checkpoint,
                                                              tmp_path: Path) -> None:  # fmt: skip
    job = Job(workflow=runner_workflow(random_checkpoint.name, steps=200), out_dir=tmp_path, servers=[comfy_server.base_url],
              retries=0, timeout_s=1.0, show_progress=False, overrides=[parse_override("Sampler.seed=4242")])  # fmt: skip
    report = run_job(job, [{}])
    assert report.counts["failed"] == 1
    (rec,) = ResultStore(tmp_path).records()
    assert "did not finish within 1s" in rec["error"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        queue = comfy_client.get_json("/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            break
        time.sleep(0.5)
    assert not queue["queue_running"] and not queue["queue_pending"], "the server is free again"
    status = comfy_client.history(rec["prompt_id"])
    assert status is None or status["status"]["status_str"] == "error", "interrupted, not finished"


def _films(folder: Path, n: int) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    films = []
    for i in range(n):
        films.append((rng.random((40, 48, 3)) * 255).astype(np.uint8))
        Image.fromarray(films[-1]).save(folder / f"film{i}.png")
    return films


@pytest.mark.server
def test_local_files_are_uploaded_and_rows_spread_over_servers(comfy_server, tmp_path: Path) -> None:
    films = _films(tmp_path / "films", 4)
    wf = {"1": {"class_type": "LoadImage", "_meta": {"title": "Radiograph"}, "inputs": {"image": "x.png"}},
          "2": {"class_type": "SaveImage", "_meta": {"title": "Save"}, "inputs": {"images": ["1", 0], "filename_prefix": "up"}}}  # fmt: skip
    manifest = write_manifest(
        tmp_path / "rows.csv", [{"image": f"films/film{i}.png", "seed": i} for i in range(4)]
    )
    mapping = parse_mapping(["image=Radiograph.image"])
    dead = f"http://127.0.0.1:{free_port()}"
    job = Job(workflow=wf, out_dir=tmp_path / "out", servers=[comfy_server.base_url, comfy_server.base_url, dead],
              mapping=mapping, base_dirs=[tmp_path], show_progress=False, retry_delay_s=0)  # fmt: skip
    report = run_job(job, read_manifest(manifest, mapping))
    assert report.counts == {"ok": 4, "failed": 0, "skipped": 0, "duplicate": 0, "not_run": 0}, (
        "two workers on the live server take every row; the dead server's worker hands its row back and stops"
    )
    records = ResultStore(tmp_path / "out").records()
    assert {r["server"] for r in records} == {comfy_server.base_url}
    for r in records:
        (png,) = r["outputs"]
        got = np.asarray(Image.open(tmp_path / "out" / png).convert("RGB"))
        assert np.array_equal(got, films[r["row_index"]]), "the uploaded file is the one the workflow loaded"
    uploaded = sorted(
        p.relative_to(comfy_server.input_dir).parts[-1]
        for p in Path(comfy_server.input_dir, "cxr_runner").rglob("film*.png")
    )
    assert uploaded == [f"film{i}.png" for i in range(4)]
    # a file that changed on disk is new work; the others stay done
    Image.fromarray(255 - films[2]).save(tmp_path / "films" / "film2.png")
    again = run_job(replace(job, servers=[comfy_server.base_url]), read_manifest(manifest, mapping))
    assert (again.counts["ok"], again.counts["skipped"]) == (1, 3)


@pytest.mark.server
def test_websocket_progress_and_polling_fallback(
    comfy_server, comfy_client, tmp_path: Path, monkeypatch
) -> None:
    api = empty_image_workflow(prefix="ws")
    api["1"]["inputs"]["color"] = 1234
    events: list[str] = []
    prompt_id, followed = comfy_client.follow(
        lambda: comfy_client.queue_prompt(api), 60, lambda kind, data: events.append(kind)
    )
    assert followed and prompt_id
    assert (
        events[0] == "execution_start"
        and "executing" in events
        and events[-1] in ("executing", "execution_success")
    )
    assert comfy_client.wait(prompt_id, 60)["status"]["status_str"] == "success"

    import websocket

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("no websocket here")

    monkeypatch.setattr(websocket, "create_connection", refuse)
    job = Job(workflow=empty_image_workflow(prefix="poll"), out_dir=tmp_path, servers=[comfy_server.base_url],
              show_progress=False, overrides=[parse_override("Canvas.color=4321")])  # fmt: skip
    assert run_job(job, [{}]).counts["ok"] == 1, "without a websocket the runner polls /history"


def _ui_workflow() -> dict:
    return {
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [], "widgets_values": [64, 32, 1, 255],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]},
            {"id": 2, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
             "outputs": [], "widgets_values": ["ui_run"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }  # fmt: skip


@pytest.mark.server
def test_run_accepts_a_plain_editor_workflow(comfy_server, tmp_path: Path) -> None:
    wf = tmp_path / "ui.json"
    wf.write_text(json.dumps(_ui_workflow()))
    out = tmp_path / "out"
    argv = [
        "run",
        str(wf),
        "--server",
        comfy_server.base_url,
        "--quiet",
        "--out",
        str(out),
        "--set",
        "Save Image.filename_prefix=ui_set",
    ]
    assert main(argv) == 0
    (line,) = read_results_csv(out)
    assert line["status"] == "ok" and "ui_set" in line["outputs"]
    with Image.open(out / line["outputs"]) as im:
        assert im.size == (64, 32)
    assert main(argv) == 0, "run always queues (ComfyUI's cache answers an identical prompt)"
    assert len(ResultStore(out).records()) == 2


@pytest.mark.server
def test_run_starts_its_own_server_uploads_files_and_reports_metrics(
    comfyui_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (film,) = _films(tmp_path, 1)
    region = np.zeros(film.shape[:2], np.uint8)
    region[10:30, 8:40] = 255
    Image.fromarray(region).save(tmp_path / "region.png")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(image_metrics_workflow(blur=True, prefix="own")))
    out = tmp_path / "out"
    argv = ["run", str(wf), "--start-server", "--comfyui-dir", str(comfyui_dir), "--quiet", "--out", str(out),
            "--file", f"Radiograph.image={tmp_path / 'film0.png'}", "--file", f"Region.image={tmp_path / 'region.png'}",
            "--set", "Blur.sigma=2.0"]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr().out
    (line,) = read_results_csv(out)
    assert line["status"] == "ok" and (out / line["outputs"]).is_file()
    assert line["metric.run_tag"] == "blur" and 0 < float(line["metric.ssim_global"]) < 1
    assert (
        f"image: {out / line['outputs']}" in said
        and "metrics (node 4): {" in said
        and '"ssim_global": ' in said
    )
