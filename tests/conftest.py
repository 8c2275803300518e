"""Test host: the real ComfyUI (0.3.75 by default) on the CPU, and this pack.

``scripts/setup_host.sh`` prepares the host; ``COMFYUI_DIR`` points tests at
another ComfyUI checkout. The pack is imported as the package ``cxr_pack`` by
``scripts/import_pack.py`` (pyproject.toml puts scripts/ on pytest's path).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
from import_pack import CACHE, NoComfyUI, comfyui_dir, import_pack, use_comfyui

# In-process tests run on the CPU; CXR_TEST_DEVICE=cuda runs them on the GPU (scripts/device_check.sh does,
# for the `gpu` subset). Server tests always start ComfyUI with --cpu.
TEST_DEVICE = os.environ.get("CXR_TEST_DEVICE", "cpu").strip().lower()
if TEST_DEVICE not in ("cpu", "cuda"):
    raise pytest.UsageError(f"CXR_TEST_DEVICE must be 'cpu' or 'cuda', received {TEST_DEVICE!r}")
if TEST_DEVICE == "cuda":
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError("CXR_TEST_DEVICE=cuda, but torch sees no CUDA device")

try:
    COMFYUI_DIR = use_comfyui(comfyui_dir(), cpu=TEST_DEVICE == "cpu")
except NoComfyUI as e:
    raise pytest.UsageError(str(e)) from None
import_pack(nodes=True)
logging.getLogger("cxr_counterfactual").setLevel(logging.DEBUG)


@pytest.fixture(scope="session")
def comfyui_dir() -> Path:
    return COMFYUI_DIR


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


@pytest.fixture
def tiny_model():
    """A fresh ModelPatcher around the tiny seeded SD1.5-structure UNet (model_channels 32)."""
    from cxr_pack.cxr_core.random_models import build_tiny_model_patcher

    return build_tiny_model_patcher(model_channels=32, seed=0)


@pytest.fixture
def inference_model():
    """The tiny seeded UNet built under inference mode, as ComfyUI's executor builds models."""
    import torch
    from cxr_pack.cxr_core.random_models import build_tiny_model_patcher

    with torch.inference_mode():
        yield build_tiny_model_patcher(model_channels=32, seed=0)


@pytest.fixture(scope="session")
def sd1_tokenizer():
    """ComfyUI's real SD1 CLIP tokenizer (the vocabulary ships with the host)."""
    import comfy.sd1_clip

    return comfy.sd1_clip.SD1Tokenizer()


@pytest.fixture(scope="session")
def random_checkpoint(cache_dir: Path) -> Path:
    """The full-size random SD1.5 checkpoint, generated once into the cache."""
    from cxr_pack.cxr_core.random_models import ensure_random_sd15_checkpoint

    return ensure_random_sd15_checkpoint(cache_dir, seed=0)


@pytest.fixture(scope="session")
def comfy_server(comfyui_dir: Path, random_checkpoint: Path):
    """A real ComfyUI server (main.py --cpu) on a free loopback port with this pack loaded.

    Temporary input/output folders; the random checkpoint is visible as a checkpoint.
    """
    from cxr_pack.cxr_runner.server import LocalComfyServer

    server = LocalComfyServer(
        comfyui_dir=comfyui_dir,
        python=sys.executable,
        model_dirs={"checkpoints": [str(random_checkpoint.parent)]},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def comfy_client(comfy_server):
    from cxr_pack.cxr_runner.client import ComfyClient

    return ComfyClient(comfy_server.base_url)
