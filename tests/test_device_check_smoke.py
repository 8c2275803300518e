"""The device check's CPU smoke run in CI: scripts/device_check.sh with its benchmark steps at CPU size.

No thresholds: this proves the plumbing (environment, steps, summary, the benchmark's CSV, markdown, JSON
and chart), not speed. The device test subset itself runs in CI as tests/test_device.py.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_check_smoke_run_on_the_cpu(tmp_path: Path, comfyui_dir: Path) -> None:
    import sys

    env = dict(
        os.environ,
        COMFYUI_DIR=str(comfyui_dir),
        CXR_PY=sys.executable,
        CXR_DEVICE_STEPS="benchmark_target,benchmark_attention,attention_heads64,profile_correction,host_reads",
    )
    out = tmp_path / "dc"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    summary = (out / "summary.md").read_text()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + summary
    assert "Mode: **CPU**" in summary and "smoke figures, not GPU figures" in summary
    assert "- benchmark_target: passed" in summary and "- workflow: not run (CXR_DEVICE_STEPS)" in summary
    rows = list(csv.DictReader((out / "target" / "benchmark.csv").open()))
    assert [r["config"] for r in rows] == [
        "plain", "gate", "gate_dense", "hard_gate", "hard_gate_dense", "reweight", "gate_reweight", "correction", "all"
    ]  # fmt: skip
    assert all(float(r["seconds"]) > 0 and float(r["peak_mib"]) > 0 for r in rows)
    assert float(rows[0]["time_ratio"]) == 1.0 and float(rows[0]["mem_ratio"]) == 1.0
    env_record = json.loads((out / "target" / "benchmark.json").read_text())["environment"]
    assert env_record["channels"] == 32 and env_record["attention_backend"]
    assert (out / "target" / "benchmark.png").stat().st_size > 1000
    assert "| 64 | 1 | all |" in (out / "target" / "benchmark.md").read_text()
    assert "- benchmark_attention: passed" in summary and "## The gate per attention call" in summary
    calls = list(csv.DictReader((out / "attention" / "attention.csv").open()))
    assert [r["form"] for r in calls] == [
        "plain", "soft_dense", "soft_low_rank", "hard_dense", "hard_groups", "hard_low_rank", "overlap_dense",
        "overlap_rows",
    ]  # fmt: skip
    assert all(r["side"] == "32" and (r["heads"], r["head_dim"]) == ("8", "40") for r in calls)
    assert all(float(r["seconds"]) > 0 for r in calls)
    assert "- attention_heads64: passed" in summary and "heads of 64 channels (SD2.x, SDXL)" in summary
    wide = list(csv.DictReader((out / "attention_heads64" / "attention.csv").open()))
    assert len(wide) == 8 and all((r["side"], r["heads"], r["head_dim"]) == ("16", "10", "64") for r in wide)
    assert "| 16x16 | 10x64 | 2 | soft_low_rank |" in summary
    dense, compact = (
        float(next(r["bias_mib"] for r in calls if r["form"] == f)) for f in ("soft_dense", "soft_low_rank")
    )
    assert dense == (32 * 32) ** 2 * 4 / 2**20, "the dense fp32 bias of a 32x32 site: 1024 x 1024 x 4 bytes"
    assert compact < dense / 50, "the low-rank factors are a few channels per token"
    overlap_dense, overlap_rows = (float(next(r["bias_mib"] for r in calls if r["form"] == f))
                                   for f in ("overlap_dense", "overlap_rows"))  # fmt: skip
    assert overlap_dense == dense and 0 < overlap_rows < dense / 4, "dense rows only where the affinity clips"
    assert "- profile_correction: passed" in summary and "## The correction's gradient pass" in summary
    record = json.loads((out / "profile" / "profile.json").read_text())
    for name in ("truncated", "untruncated"):
        p = record["configs"][name]
        assert p["passes_per_run"] >= 1 and p["backward_ms"] > 0 and p["forward_and_energy_ms"] > 0, p
    step, whole, backward = record["operators"].values()  # one plain step, one gradient pass, its backward
    assert step["aten_ops"] > 0 and whole["aten_ops"] > backward["aten_ops"] > 0, record["operators"]
    assert whole["wall_ms"] > backward["wall_ms"] > 0 and step["device_ms"] is None, (
        "the CPU has no device kernels"
    )
    assert any("convolution" in r["op"] for r in step["top"]), step["top"]
    assert any(r["op"].endswith("_backward") for r in backward["top"]), backward["top"]
    assert "Top operators of gradient pass" in summary
    assert "- host_reads: passed" in summary and "## Host reads and operators per step" in summary
    counts = {
        r["config"]: r for r in json.loads((out / "host_reads" / "host_reads.json").read_text())["rows"]
    }
    assert list(counts) == ["plain", "gate", "hard_gate", "reweight", "gate_reweight", "correction", "all"]
    assert counts["plain"]["reads_added"] == 0 and counts["plain"]["ops_ratio"] == 1.0
    assert all(r["ops_per_step"] > 0 for r in counts.values())


def test_a_failing_operator_profile_keeps_the_timings_and_says_why() -> None:
    """On a GPU without CUPTI the profiler fails; the profile step still writes what it timed."""
    from profile_correction import or_reason

    def no_profiler() -> list[str]:
        raise RuntimeError("CUPTI is not available")

    result: dict = {"configs": {"truncated": {"pass_ms": 1.0}}}
    assert or_reason(no_profiler, result) == ["Operator profile failed: RuntimeError: CUPTI is not available"]
    assert result["operators_error"] == "RuntimeError: CUPTI is not available" and result["configs"]
    assert or_reason(lambda: ["| table |"], {}) == ["| table |"]


def _step_limits() -> dict[str, int]:
    """Each step's time limit on CUDA (a step's CUDA branch comes before its CPU one in the script)."""
    script = (REPO / "scripts" / "device_check.sh").read_text()
    limits: dict[str, int] = {}
    for name, limit in re.findall(r"^\s*step (\w+) (\d+) ", script, flags=re.M):
        limits.setdefault(name, int(limit))
    return limits


def test_the_readme_device_calls_fit_ten_minute_commands_and_cover_every_step() -> None:
    """The README splits the device check over two calls of at most 600 s: each call's step limits (on CUDA)
    must fit, the README must state their sums as they are, and the two calls run every step."""
    limits = _step_limits()
    readme = (REPO / "README.md").read_text()
    calls = re.findall(r"`CXR_DEVICE_STEPS=([\w,]+)`\s*\(their limits add up to (\d+) s\)", readme)
    assert len(calls) == 2, "README: the two device calls and the sums of their step limits"
    for names, stated in calls:
        total = sum(limits[s] for s in names.split(","))
        assert total == int(stated) and total <= 600 - 20, (names, limits, total)
    assert sorted(s for names, _ in calls for s in names.split(",")) == sorted(limits), "every step, once"


def _dry_run(tmp_path: Path, comfyui_dir: Path, steps: str | None) -> dict[str, str]:
    import sys

    env = dict(os.environ, COMFYUI_DIR=str(comfyui_dir), CXR_PY=sys.executable, CXR_DEVICE_DRY_RUN="1")
    env.pop("CXR_DEVICE_STEPS", None)
    if steps is not None:
        env["CXR_DEVICE_STEPS"] = steps
    out = tmp_path / (steps or "default")
    subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), str(out)], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    lines = re.findall(r"^- (\w+): (would run|not run)", (out / "summary.md").read_text(), flags=re.M)
    return dict(lines)


def test_the_default_device_check_runs_the_check_and_all_adds_the_diagnostics(
    tmp_path: Path, comfyui_dir: Path
) -> None:
    """Default: tests, both workflows and the benchmarks; the developer diagnostics only with ``all``."""
    diagnostics = {"attention_heads64", "profile_correction", "host_reads"}
    default = _dry_run(tmp_path, comfyui_dir, None)
    assert {s for s, what in default.items() if what == "would run"} == {
        "tests",
        "workflow",
        "benchmark_target",
        "benchmark_attention",
        "workflow_offload",
    }, default  # fmt: skip  (the grid is a GPU step: the CPU branch has none)
    assert all(default[s] == "not run" for s in diagnostics)
    everything = _dry_run(tmp_path, comfyui_dir, "all")
    assert set(everything) == set(default) and all(what == "would run" for what in everything.values())
    named = _dry_run(tmp_path, comfyui_dir, "host_reads")
    assert [s for s, what in named.items() if what == "would run"] == ["host_reads"]
