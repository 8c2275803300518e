"""Cluster scale: the Slurm array script and the Kubernetes indexed Job run shards into one folder.

Both run ``scripts/cluster/run_shard.sh`` (one ComfyUI per GPU, then the runner
with ``--shard``); here each shard runs its own real ComfyUI on the CPU, one
shard is killed midway (runner and server together, as a scheduler would) and
run again, and every row must end up done exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from cxr_pack.cxr_runner.results import ResultStore, read_results_csv
from runner_helpers import write_manifest

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "scripts" / "cluster"
ROWS = 40


def _slow_workflow() -> dict:
    """EmptyImage -> ImageBlur -> SaveImage: a fraction of a second per row on a CPU, no model."""
    return {
        "1": {"class_type": "EmptyImage", "_meta": {"title": "Canvas"},
              "inputs": {"width": 384, "height": 384, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageBlur", "_meta": {"title": "Blur"}, "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 8.0}},
        "3": {"class_type": "SaveImage", "_meta": {"title": "Save"}, "inputs": {"images": ["2", 0], "filename_prefix": "shard"}},
    }  # fmt: skip


def test_kubernetes_job_and_slurm_script_run_one_shard_per_task() -> None:
    job = yaml.safe_load((CLUSTER / "k8s_indexed_job.yaml").read_text())
    spec = job["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    assert int(env["SHARD_COUNT"]) == spec["completions"], "the shard count must equal the Job's completions"
    assert container["command"] == ["bash", "scripts/cluster/run_shard.sh"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, "one GPU, one ComfyUI per pod"
    assert (REPO / container["command"][1]).is_file()
    sbatch = (CLUSTER / "slurm_array.sbatch").read_text()
    assert "#SBATCH --array=" in sbatch and "#SBATCH --gres=gpu:1" in sbatch
    assert 'exec bash "$REPO/scripts/cluster/run_shard.sh" "$@"' in sbatch
    for script in ("run_shard.sh", "slurm_array.sbatch"):
        subprocess.run(["bash", "-n", str(CLUSTER / script)], check=True)


def test_run_shard_refuses_a_missing_comfyui(tmp_path: Path) -> None:
    env = dict(os.environ, COMFYUI_DIR=str(tmp_path))
    done = subprocess.run(["bash", str(CLUSTER / "run_shard.sh"), "manifest", "x.json", "y.csv"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert f"COMFYUI_DIR='{tmp_path}' is not a ComfyUI checkout (no main.py)" in done.stderr


def _start(kind: str, index: int, comfyui_dir: Path, args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, COMFYUI_DIR=str(comfyui_dir), COMFYUI_PYTHON=sys.executable, COMFYUI_ARGS="--cpu",
               CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")  # fmt: skip
    for var in ("SHARD_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        env.pop(var, None)
    if kind == "slurm":  # as sbatch --array=0-1 sets it for task `index`
        env.update(SLURM_ARRAY_TASK_ID=str(index), SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_COUNT="2",
                   CXR_REPO=str(REPO))  # fmt: skip
        cmd = ["bash", str(CLUSTER / "slurm_array.sbatch"), *args]
    else:  # a pod of the indexed Job
        env.update(JOB_COMPLETION_INDEX=str(index), SHARD_COUNT="2")
        cmd = ["bash", str(CLUSTER / "run_shard.sh"), *args]
    with log.open("ab") as fh:
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def _ok_rows(out: Path, shard: int) -> int:
    return sum(1 for r in ResultStore(out).records() if r["status"] == "ok" and r["row_index"] % 2 == shard)


@pytest.mark.server
def test_two_shards_share_one_folder_survive_a_kill_and_finish_every_row_once(
    comfyui_dir: Path, tmp_path: Path
) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_slow_workflow()))
    manifest = write_manifest(tmp_path / "rows.csv", [{"seed": 1000 + i} for i in range(ROWS)])
    (tmp_path / "rows.map.json").write_text(json.dumps({"seed": "Canvas.color"}))
    out = tmp_path / "out"
    args = ["manifest", str(wf), str(manifest), "--out", str(out), "--quiet", "--retry-delay", "0"]
    logs = {0: tmp_path / "shard0.log", 1: tmp_path / "shard1.log"}
    started = time.monotonic()
    k8s = _start("k8s", 0, comfyui_dir, args, logs[0])
    slurm = _start("slurm", 1, comfyui_dir, args, logs[1])
    try:
        deadline = time.monotonic() + 240
        while _ok_rows(out, 0) < 4 and k8s.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert k8s.poll() is None, f"shard 0 ended before it could be killed:\n{logs[0].read_text()[-3000:]}"
        os.killpg(k8s.pid, signal.SIGKILL)  # the pod dies: runner and its ComfyUI at once
        k8s.wait(30)
        done_before_kill = _ok_rows(out, 0)
        assert 4 <= done_before_kill < ROWS // 2, "killed midway"
        assert slurm.wait(300) == 0, logs[1].read_text()[-3000:]
        k8s = _start("k8s", 0, comfyui_dir, args, logs[0])  # the restarted pod
        assert k8s.wait(300) == 0, logs[0].read_text()[-3000:]
    finally:
        for proc in (k8s, slurm):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    records = ResultStore(out).records()
    ok = Counter(r["row_index"] for r in records if r["status"] == "ok")
    assert ok == Counter(range(ROWS)), "every row done exactly once in results.jsonl"
    assert len(records) == ROWS, "no failed or repeated records either"
    lines = read_results_csv(out)
    assert sorted(int(x["row_index"]) for x in lines) == list(range(ROWS)) and {
        x["status"] for x in lines
    } == {"ok"}
    assert all((out / r["outputs"][0]).is_file() for r in records)
    resumed = [r for r in records if r["row_index"] % 2 == 0]
    assert len({r["run_id"] for r in resumed}) == 2, (
        "shard 0's rows come from the killed run and the resumed one"
    )
    assert f"{done_before_kill} skipped" in logs[0].read_text(), (
        "the rerun skips what the killed shard finished"
    )
    print(
        f"two shards, {ROWS} rows, shard 0 killed after {done_before_kill} rows and resumed: "
        f"{time.monotonic() - started:.1f}s"
    )
