"""The metrics nodes on a real ComfyUI server: concurrent CSV appends and FID through the API queue."""

from __future__ import annotations

import csv
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from cxr_pack.cxr_core.metrics.csv_log import CSV_COLUMNS
from metric_helpers import demo_pairs, random_inception_file
from PIL import Image

N_PROMPTS = 20


def _save_grey(path: Path, grey: torch.Tensor) -> None:
    a = (grey.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(np.stack([a, a, a], axis=-1)).save(path)


def _metrics_prompt(i: int, cf_name: str, csv_name: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "cxrm_original.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": cf_name}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": "cxrm_region.png", "channel": "red"}},
        "4": {
            "class_type": "CXRMetrics",
            "inputs": {
                "original": ["1", 0],
                "counterfactual": ["2", 0],
                "target_region": ["3", 0],
                "run_tag": f"p{i:02d}",
                "csv_name": csv_name,
            },
        },
    }


@pytest.mark.server
def test_csv_survives_20_concurrent_prompts(comfy_server, comfy_client) -> None:
    x0, x1, region = demo_pairs()["lesion"]
    x0, x1, region = x0[:128, :120], x1[:128, :120], region[:128, :120]
    inp = Path(comfy_server.input_dir)
    _save_grey(inp / "cxrm_original.png", x0)
    _save_grey(inp / "cxrm_lesion.png", (x0 + 0.3 * torch.rand_like(x0) * region).clamp(0, 1))
    _save_grey(inp / "cxrm_region.png", region)
    csv_name = "server_concurrency/metrics.csv"
    # every fourth prompt compares the original with itself: infinite PSNR must travel as JSON
    prompts = [_metrics_prompt(i, "cxrm_original.png" if i % 4 == 0 else "cxrm_lesion.png", csv_name) for i in range(N_PROMPTS)]  # fmt: skip
    with ThreadPoolExecutor(max_workers=N_PROMPTS) as pool:
        ids = list(pool.map(comfy_client.queue_prompt, prompts))
    entries = [comfy_client.wait(pid, timeout_s=600) for pid in ids]

    for i, entry in enumerate(entries):
        out = entry["outputs"]["4"]
        (rec,) = out["cxr_metrics"]
        assert rec["run_tag"] == f"p{i:02d}"
        assert out["text"] and out["images"]
        if i % 4 == 0:
            assert rec["psnr_global_infinite"] is True and rec["psnr_global_db"] is None
            assert rec["localisation"] is None and rec["ssim_global"] == pytest.approx(1.0)
        else:
            assert math.isfinite(rec["psnr_global_db"]) and rec["localisation"] > 0.9

    path = Path(comfy_server.output_dir) / csv_name
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert lines.count(lines[0]) == 1, "the header must be written once"
    assert text.endswith("\n")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == N_PROMPTS
    assert sorted(r["run_tag"] for r in rows) == [f"p{i:02d}" for i in range(N_PROMPTS)]
    for r in rows:
        assert None not in r and len(r) == len(CSV_COLUMNS)
        assert 0.0 < float(r["ssim_global"]) <= 1.0
        assert r["psnr_global_db"] == "inf" or math.isfinite(float(r["psnr_global_db"]))
        assert r["image_index"] == "0" and r["height"] == "128" and r["width"] == "120"


@pytest.mark.server
def test_fid_over_a_dataset_through_the_api_queue(comfyui_dir: Path, tmp_path: Path) -> None:
    """The README's recipe: one prompt per image into 'real' and 'generated', then one compute prompt."""
    from cxr_pack.cxr_runner.client import ComfyClient
    from cxr_pack.cxr_runner.server import LocalComfyServer

    weights = tmp_path / "models" / "inception"
    weights.mkdir(parents=True)
    random_inception_file(weights / "random_inception_fid.safetensors")
    server = LocalComfyServer(
        comfyui_dir=comfyui_dir, python=sys.executable, model_dirs={"inception": [str(weights)]}
    )
    with server:
        client = ComfyClient(server.base_url)
        pairs = demo_pairs()
        names = []
        for k, (x0, x1, _) in enumerate(pairs.values()):
            _save_grey(server.input_dir / f"real_{k}.png", x0[:96, :96])
            _save_grey(server.input_dir / f"gen_{k}.png", x1[:96, :96])
            names += [("real", f"real_{k}.png"), ("generated", f"gen_{k}.png")]

        def accumulate(set_name: str, image: str) -> dict:
            return {
                "1": {"class_type": "LoadImage", "inputs": {"image": image}},
                "2": {
                    "class_type": "CXRInceptionLoader",
                    "inputs": {"weights": "random_inception_fid.safetensors"},
                },
                "3": {
                    "class_type": "CXRFIDAccumulate",
                    "inputs": {
                        "images": ["1", 0],
                        "study": "demo",
                        "set_name": set_name,
                        "inception": ["2", 0],
                    },
                },
            }

        ids = [client.queue_prompt(accumulate(s, img)) for s, img in names]
        for pid in ids:
            client.wait(pid, timeout_s=600)
        compute = {"1": {"class_type": "CXRFIDCompute", "inputs": {"study": "demo", "set_a": "real", "set_b": "generated"}}}  # fmt: skip
        (rep,) = client.run(compute, timeout_s=600)["outputs"]["1"]["cxr_fid"]
        assert (rep["n_a"], rep["n_b"], rep["feature_dim"]) == (3, 3, 2048)
        assert rep["extractor"]["kind"] == "inception" and math.isfinite(rep["fid"]) and rep["fid"] > 0
        assert rep["reliable"] is False and "fewer than the feature dimension" in rep["warnings"][0]
        # a later prompt that adds an image changes the files, so the same compute prompt re-runs
        client.wait(client.queue_prompt(accumulate("real", "gen_0.png")), timeout_s=600)
        (again,) = client.run(compute, timeout_s=600)["outputs"]["1"]["cxr_fid"]
        assert again["n_a"] == 4 and again["fid"] != rep["fid"]
        assert (server.output_dir / "cxr_fid" / "demo" / "real.safetensors").is_file()
