"""The metric registry (cxr_core/metrics/registry.py) is the one definition of every metric.

The JSON record, the CSV columns, the runner's default table and arrows and the
README's table follow it; a metric added to it (in a temporary copy of the pack)
reaches all of them; a CSV written before a metric was added takes new rows.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cxr_pack.cxr_core.metrics.csv_log import CSV_COLUMNS, append_records
from cxr_pack.cxr_core.metrics.image_scores import pair_scores
from cxr_pack.cxr_core.metrics.registry import METRICS, markdown_table
from cxr_pack.cxr_core.metrics.report import build_record
from cxr_pack.cxr_runner.aggregate import DEFAULT_METRICS, direction
from metric_helpers import demo_pairs
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
ADDED = (
    '    _m("psnr_inside_db", "dB", "higher", "inside", "10 log10(1 / MSE), MSE weighted by m", "psnr"),\n'
)


def _record(x0: torch.Tensor, x1: torch.Tensor, region: torch.Tensor) -> dict:
    return build_record(pair_scores(x0, x1, region), run_tag="t", image_index=0, batch_size=1,
                        size=tuple(x0.shape), channels=(1, 1), excluded_organs=[], clip_i=None,
                        clip_reason="no CLIP_VISION", validity={"available": False, "reason": "none"})  # fmt: skip


def test_readme_metrics_table_is_the_registry() -> None:
    assert markdown_table() in (REPO / "README.md").read_text(encoding="utf-8"), (
        "README.md's Metrics table differs from cxr_core/metrics/registry.py; paste registry.markdown_table()"
    )


def test_record_csv_and_runner_take_the_registry_order() -> None:
    x0, x1, region = demo_pairs()["noise"]
    rec = _record(x0, x1, region)
    names = [m.name for m in METRICS]
    assert [k for k in rec if k in names] == names
    metric_columns = [c for c in CSV_COLUMNS if c not in ("timestamp_utc", "run_tag", "image_index", "batch_size",
                                                          "height", "width", "notes")]  # fmt: skip
    assert metric_columns == [c for m in METRICS for c in m.csv_columns()]
    assert DEFAULT_METRICS == ("ssim_global", "ssim_outside", "ssim_inside", "psnr_global_db", "psnr_outside_db",
                               "mae_global", "mae_outside", "localisation", "clip_i", "validity.delta")  # fmt: skip
    arrows = {
        m: direction(m) for m in ("ssim_outside", "ssim_organs.heart", "mae_global", "ssim_inside", "x")
    }
    assert arrows == {
        "ssim_outside": "↑",
        "ssim_organs.heart": "↑",
        "mae_global": "↓",
        "ssim_inside": "",
        "x": "",
    }


_PROBE = r"""
import json, sys
from pathlib import Path
from import_pack import import_pack
import_pack()
from cxr_pack.cxr_core.metrics.csv_log import append_records
from cxr_pack.cxr_core.metrics.image_scores import pair_scores
from cxr_pack.cxr_core.metrics.report import build_record
from cxr_pack.cxr_runner.aggregate import aggregate, markdown
from cxr_pack.cxr_runner.results import ResultStore, read_results_csv

from safetensors.torch import load_file
x0, x1, region = (load_file(sys.argv[1])[k] for k in ("x0", "x1", "region"))
rec = build_record(pair_scores(x0, x1, region), run_tag="probe", image_index=0, batch_size=1, size=(64, 64),
                   channels=(1, 1), excluded_organs=[], clip_i=None, clip_reason="no CLIP_VISION",
                   validity={"available": False, "reason": "no classifier"})
out = Path(sys.argv[2])
append_records(out / "metrics.csv", [rec])
store = ResultStore(out / "run")
store.append({"row_key": "k", "row_index": 0, "status": "ok", "metrics": [{"node": "4", "record": rec}]})
table = aggregate({"variant": read_results_csv(store.write_csv())})
print(json.dumps({"record": rec, "table": {m: s.mean for m, s in table["variant"].items()}, "md": markdown(table)}))
"""


def test_a_metric_added_to_the_registry_reaches_record_csv_and_aggregate(tmp_path: Path) -> None:
    copy = tmp_path / "pack"
    for part in ("cxr_core", "cxr_runner"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "import_pack.py", copy / "scripts")
    shutil.copy(REPO / "__init__.py", copy)
    registry = copy / "cxr_core" / "metrics" / "registry.py"
    text = registry.read_text(encoding="utf-8")
    anchor = text.index("\n", text.index('_m("psnr_outside_db"')) + 1
    registry.write_text(text[:anchor] + ADDED + text[anchor:], encoding="utf-8")

    g = torch.Generator().manual_seed(7)
    x0 = torch.rand(64, 64, generator=g, dtype=torch.float64)
    x1 = (x0 + 0.2 * torch.rand(64, 64, generator=g, dtype=torch.float64)).clamp(0, 1)
    region = torch.zeros(64, 64, dtype=torch.float64)
    region[16:48, 20:44] = 1.0
    save_file({"x0": x0, "x1": x1, "region": region}, str(tmp_path / "pair.safetensors"))
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "pair.safetensors"), str(tmp_path)],
                          env=dict(os.environ, PYTHONPATH=str(copy / "scripts")), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = json.loads(proc.stdout)
    expected = 10 * math.log10(1 / float(((x1 - x0) ** 2)[16:48, 20:44].mean()))
    rec = said["record"]
    assert rec["psnr_inside_db"] == pytest.approx(expected, rel=1e-9) and rec["psnr_inside_infinite"] is False
    keys = list(rec)
    assert keys.index("psnr_outside_db") < keys.index("psnr_inside_db") < keys.index("mae_global")
    with (tmp_path / "metrics.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["psnr_inside_db"]) == pytest.approx(expected, rel=1e-12)
    assert said["table"]["psnr_inside_db"] == pytest.approx(expected, rel=1e-12)
    assert "psnr_inside_db ↑" in said["md"]
    assert "psnr_inside_db" not in [m.name for m in METRICS], "the checkout's registry is untouched"


def test_a_csv_from_before_a_metric_was_added_takes_new_rows(tmp_path: Path) -> None:
    x0, x1, region = demo_pairs()["noise"]
    rec = _record(x0, x1, region)
    older = [c for c in CSV_COLUMNS if c not in ("clip_i", "mae_inside")]
    path = tmp_path / "metrics.csv"
    path.write_text(",".join(older) + "\n" + ",".join(f"old-{c}" for c in older) + "\n", encoding="utf-8")
    assert append_records(path, [rec]) == 1
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert rows[0] == {c: ("" if c in ("clip_i", "mae_inside") else f"old-{c}") for c in CSV_COLUMNS}
    assert float(rows[1]["mae_inside"]) == pytest.approx(rec["mae_inside"], rel=1e-12)
    assert append_records(path, [rec]) == 1
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and [line.startswith("timestamp_utc,") for line in lines] == [
        True,
        False,
        False,
        False,
    ]
