"""Seeded, randomly initialised SD1.5-architecture models.

No weights can be downloaded, so tests and the demo run on models built here:
- a tiny UNet with SD1.5's real block structure (all 16 attention sites,
  context 768) for fast CPU tests;
- a full-size SD1.5 checkpoint (UNet, CLIP-L text encoder, VAE) written as
  safetensors in the original LDM layout, so ComfyUI's own
  ``CheckpointLoaderSimple`` detects it as SD1.5.

Random weights prove mechanics, not medicine: images made with them are noise
shaped by the pipeline, never radiology.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

log = logging.getLogger("cxr_counterfactual.random_models")

SD15_BASE_UNET_CONFIG: dict = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": 768,
    "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}

SD15_VAE_DDCONFIG: dict = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}

RANDOM_CHECKPOINT_NAME = "cxr_random_sd15_seed{seed}.safetensors"


def sd15_unet_config(model_channels: int = 320) -> dict:
    """SD1.5's UNet config; a smaller ``model_channels`` keeps every block and site."""
    cfg = dict(SD15_BASE_UNET_CONFIG)
    cfg["model_channels"] = int(model_channels)
    return cfg


@torch.no_grad()
def init_random_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded variance-preserving init of every parameter, in place.

    comfy.ops skips weight initialisation, so modules built by ComfyUI hold
    uninitialised memory until this runs. Norm scales are 1, biases 0, and
    weights N(0, 1/fan_in), which keeps activations O(1) through the network.
    Each tensor gets its own generator seeded from ``seed`` and its name, so the
    result does not depend on parameter order or on the device.
    """
    for name, p in module.named_parameters():
        gen = torch.Generator().manual_seed((seed * 1_000_003 + _stable_hash(name)) % (2**63))
        if name.endswith("bias"):
            p.zero_()
        elif p.ndim == 1:
            p.fill_(1.0)
        else:
            fan_in = math.prod(p.shape[1:])
            std = 0.02 if "embedding" in name else 1.0 / math.sqrt(max(fan_in, 1))
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * std)
    return module


def _stable_hash(text: str) -> int:
    h = 1469598103934665603
    for ch in text.encode():
        h = ((h ^ ch) * 1099511628211) % (2**64)
    return h


def build_sd15_base_model(model_channels: int = 320, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A seeded ``comfy.model_base.BaseModel`` (eps-prediction SD1.5)."""
    import comfy.supported_models

    model_config = comfy.supported_models.SD15(sd15_unet_config(model_channels))
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({})
    init_random_(model.diffusion_model, seed)
    return model


def build_tiny_model_patcher(model_channels: int = 32, seed: int = 0):
    """A ModelPatcher around a tiny seeded SD1.5-structure UNet on the CPU."""
    import comfy.model_patcher

    model = build_sd15_base_model(model_channels, seed, torch.float32)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def random_checkpoint_path(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    return Path(cache_dir) / "checkpoints" / RANDOM_CHECKPOINT_NAME.format(seed=seed)


def ensure_random_sd15_checkpoint(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the full-size random SD1.5 checkpoint once; later calls reuse it."""
    path = random_checkpoint_path(cache_dir, seed)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    log.info("generating a random SD1.5-architecture checkpoint (seed %d) at %s", seed, path)
    write_random_sd15_checkpoint(tmp, seed)
    os.replace(tmp, path)
    return path


@torch.no_grad()
def write_random_sd15_checkpoint(path: str | os.PathLike, seed: int = 0) -> None:
    """UNet + CLIP-L text encoder + VAE, fp16, original LDM key layout."""
    import comfy.ldm.models.autoencoder
    import comfy.sd1_clip
    import safetensors.torch

    model = build_sd15_base_model(320, seed, torch.float32)
    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float32)
    init_random_(clip, seed + 1)
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dict(SD15_VAE_DDCONFIG), embed_dim=4)
    init_random_(vae, seed + 2)
    clip_sd = clip.state_dict()
    # position ids are buffers, not parameters: keep the real 0..76 ramp
    sd = model.state_dict_for_saving(clip_sd, vae.state_dict())
    out = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    metadata = {
        "cxr_counterfactual": "random-weights",
        "seed": str(seed),
        "warning": "randomly initialised SD1.5 architecture: shows mechanics, not medicine",
    }
    safetensors.torch.save_file(out, str(path), metadata=metadata)
