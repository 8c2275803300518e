"""The harness itself: the real host loads the pack, samples, and serves workflows."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import core_txt2img_workflow, random_cond, sample
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PACK_NODES = {
    "OrganMaskFromMask", "CXRImageLoader", "OrganMaskLoader", "PathologySpatialPrior", "AnatomyAttentionGate",
    "PathologyCrossAttnReweight", "EnergyLatentCorrector", "AttentionMapCapture", "AttentionMapRender", "CXRMetrics",
    "CXRFIDAccumulate", "CXRFIDCompute",
}  # fmt: skip


def test_pack_imports_under_quick_test_for_ci(comfyui_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "main.py", "--cpu", "--quick-test-for-ci", "--user-directory", str(tmp_path),
         "--database-url", "sqlite:///:memory:"],
        cwd=comfyui_dir, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    ours = [line for line in out.splitlines() if "custom_nodes/comfyui-cxr-counterfactual" in line]
    assert any("seconds:" in line for line in ours), (
        f"pack not listed among loaded custom nodes:\n{out[-3000:]}"
    )
    assert not any("IMPORT FAILED" in line or "Cannot import" in line for line in ours), "\n".join(ours)


def test_tiny_model_has_sd15_attention_sites(tiny_model) -> None:
    from comfy.ldm.modules.attention import BasicTransformerBlock

    unet = tiny_model.model.diffusion_model
    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    assert len(blocks) == 16
    assert {b.attn2.to_k.in_features for b in blocks} == {768}


def test_tiny_model_samples_on_cpu(tiny_model) -> None:
    pos, neg = random_cond(1), random_cond(2)
    out = sample(tiny_model, pos, neg, seed=3, steps=3, latent_hw=(16, 24))
    assert out.shape == (1, 4, 16, 24)
    assert torch.isfinite(out).all()
    again = sample(tiny_model, pos, neg, seed=3, steps=3, latent_hw=(16, 24))
    assert torch.equal(out, again), "sampling the seeded tiny model must be deterministic"
    other = sample(tiny_model, pos, neg, seed=4, steps=3, latent_hw=(16, 24))
    assert not torch.equal(out, other)


@pytest.mark.server
def test_server_lists_pack_nodes(comfy_client) -> None:
    info = comfy_client.object_info()
    missing = PACK_NODES - info.keys()
    assert not missing, f"pack nodes missing from /object_info: {missing}"
    node = info["OrganMaskFromMask"]
    assert node["category"].startswith("CXR Counterfactual")
    assert node["output"] == ["ORGAN_MASKS"]


@pytest.mark.server
def test_server_runs_the_nodes_of_this_checkout(comfy_client) -> None:
    """What the server says of each node (inputs, outputs, names) is what this checkout's classes declare."""
    import cxr_pack

    nodes = asyncio.run(asyncio.run(cxr_pack.comfy_entrypoint()).get_node_list())
    keys = ("input_order", "output", "output_name", "display_name", "category", "description", "output_node")
    ours = {cls.GET_NODE_INFO_V1()["name"]: cls.GET_NODE_INFO_V1() for cls in nodes}
    assert PACK_NODES <= ours.keys()
    served = comfy_client.object_info()
    for name, info in ours.items():
        assert name in served, f"the server lacks {name}: it does not load this checkout's nodes"
        mine = json.loads(json.dumps({k: info.get(k) for k in keys}))
        assert {k: served[name].get(k) for k in keys} == mine, (
            f"{name}: the server runs other code than {REPO}"
        )


@pytest.mark.server
@pytest.mark.checkpoint
def test_core_workflow_runs_on_random_checkpoint(comfy_client, random_checkpoint: Path) -> None:
    from cxr_pack.cxr_runner.client import output_images

    entry = comfy_client.run(core_txt2img_workflow(random_checkpoint.name, size=64, steps=2), timeout_s=600)
    images = output_images(entry)
    assert len(images) == 1
    png = comfy_client.view(images[0]["filename"], images[0]["subfolder"], images[0]["type"])
    img = Image.open(io.BytesIO(png))
    assert img.size == (64, 64)
