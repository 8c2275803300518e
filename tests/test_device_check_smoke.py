"""The device check's CPU smoke run in CI: scripts/device_check.sh with its benchmark step at CPU size.

No thresholds: this proves the plumbing (environment, steps, summary, the benchmark's CSV, markdown, JSON
and chart), not speed. The device test subset itself runs in CI as tests/test_device.py.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_check_smoke_run_on_the_cpu(tmp_path: Path, comfyui_dir: Path) -> None:
    import sys

    env = dict(
        os.environ, COMFYUI_DIR=str(comfyui_dir), CXR_PY=sys.executable, CXR_DEVICE_STEPS="benchmark_target"
    )
    out = tmp_path / "dc"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    summary = (out / "summary.md").read_text()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + summary
    assert "Mode: **CPU**" in summary and "smoke figures, not GPU figures" in summary
    assert "- benchmark_target: passed" in summary and "- workflow: not run (CXR_DEVICE_STEPS)" in summary
    rows = list(csv.DictReader((out / "target" / "benchmark.csv").open()))
    assert [r["config"] for r in rows] == ["plain", "gate", "reweight", "correction", "all"]
    assert all(float(r["seconds"]) > 0 and float(r["peak_mib"]) > 0 for r in rows)
    assert float(rows[0]["time_ratio"]) == 1.0 and float(rows[0]["mem_ratio"]) == 1.0
    env_record = json.loads((out / "target" / "benchmark.json").read_text())["environment"]
    assert env_record["channels"] == 32 and env_record["attention_backend"]
    assert (out / "target" / "benchmark.png").stat().st_size > 1000
    assert "| 64 | 1 | all |" in (out / "target" / "benchmark.md").read_text()
