"""Test host: the real ComfyUI (0.3.75 by default) on the CPU, and this pack.

``scripts/setup_host.sh`` prepares the host; ``COMFYUI_DIR`` points tests at
another ComfyUI checkout. The repository root is never put on sys.path
(its ``nodes/`` would shadow ComfyUI's ``nodes.py``): the pack is imported as
the package ``cxr_pack``, the way ComfyUI imports it as a custom node.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("CXR_CACHE_DIR", Path.home() / ".cache" / "comfyui-cxr-counterfactual"))
COMFYUI_DIR = Path(os.environ.get("COMFYUI_DIR", CACHE / "ComfyUI"))

if not (COMFYUI_DIR / "comfy" / "model_patcher.py").is_file():
    raise pytest.UsageError(
        f"No ComfyUI host at {COMFYUI_DIR}. Run `bash scripts/setup_host.sh` first, "
        "or set COMFYUI_DIR to your ComfyUI checkout."
    )

# In-process tests run on the CPU; CXR_TEST_DEVICE=cuda runs them on the GPU (scripts/device_check.sh does,
# for the `gpu` subset). Server tests always start ComfyUI with --cpu.
TEST_DEVICE = os.environ.get("CXR_TEST_DEVICE", "cpu").strip().lower()
if TEST_DEVICE not in ("cpu", "cuda"):
    raise pytest.UsageError(f"CXR_TEST_DEVICE must be 'cpu' or 'cuda', received {TEST_DEVICE!r}")
if TEST_DEVICE == "cuda":
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError("CXR_TEST_DEVICE=cuda, but torch sees no CUDA device")

sys.path.insert(0, str(COMFYUI_DIR))
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = TEST_DEVICE == "cpu"


def _load_pack() -> object:
    spec = importlib.util.spec_from_file_location(
        "cxr_pack", REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["cxr_pack"] = module
    spec.loader.exec_module(module)
    return module


_load_pack()
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
