"""Seeded, randomly initialised SD1.5-, SD2- and SDXL-architecture models.

No weights can be downloaded, so tests and the demo run on models built here:
- tiny UNets with the real block structure of each supported family, for fast
  CPU tests (build_tiny_model_patcher): SD1.5 (16 attention sites, context 768,
  8 heads, conv projections, epsilon), SD2 (the same sites, context 1024,
  64-channel heads, linear projections, v-prediction) and SDXL (attention at
  two levels, two transformer blocks per site, context 2048, the 2816-wide
  pooled-text + size conditioning);
- a full-size SD1.5 checkpoint (UNet, CLIP-L text encoder, VAE) written as
  safetensors in the original LDM layout, so ComfyUI's own
  ``CheckpointLoaderSimple`` detects it as SD1.5 (the same weights as a
  diffusers folder: diffusers_export.py);
- an SDXL-family checkpoint (Segmind Vega's UNet layout, CLIP-L + CLIP-G, VAE)
  that ComfyUI detects as SDXL;
- a tiny PixArt DiT (ComfyUI's own class), a model family the pack refuses.

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


# SD2.x: SD1.5's layout with OpenCLIP-H's 1024-wide context, linear projections, 64-channel heads
SD2_BASE_UNET_CONFIG: dict = {
    **SD15_BASE_UNET_CONFIG,
    "use_linear_in_transformer": True,
    "context_dim": 1024,
}

# SDXL: three levels, attention at the lower two, context 2048 (CLIP-L + CLIP-G), adm 2816.
# The tiny variant keeps two transformer blocks per site (SDXL 1.0 has 2 and 10).
SDXL_TINY_UNET_CONFIG: dict = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "num_classes": "sequential",
    "adm_in_channels": 2816,
    "in_channels": 4,
    "model_channels": 64,
    "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 2, 2],
    "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 2,
    "use_linear_in_transformer": True,
    "context_dim": 2048,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 2, 2, 2],
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}

FAMILIES = ("sd15", "sd2", "sdxl")
# text context width and pooled width of each family's text encoder(s)
CONTEXT_DIM = {"sd15": 768, "sd2": 1024, "sdxl": 2048}
POOLED_DIM = {"sd15": None, "sd2": None, "sdxl": 1280}


def sd15_unet_config(model_channels: int = 320) -> dict:
    """SD1.5's UNet config; a smaller ``model_channels`` keeps every block and site."""
    cfg = dict(SD15_BASE_UNET_CONFIG)
    cfg["model_channels"] = int(model_channels)
    return cfg


def build_tiny_base_model(family: str = "sd15", seed: int = 0, dtype: torch.dtype = torch.float32):
    """A seeded tiny ``comfy.model_base`` model of one family ("sd15", "sd2" or "sdxl").

    sd15: model_channels 32, epsilon. sd2: model_channels 64 (one 64-channel head at the finest level,
    as SD2's num_head_channels 64), v-prediction. sdxl: model_channels 64, depth 2 at every site, epsilon.
    """
    import comfy.model_base
    import comfy.supported_models

    if family == "sd15":
        return build_sd15_base_model(32, seed, dtype)
    if family == "sd2":
        model_config = comfy.supported_models.SD20({**SD2_BASE_UNET_CONFIG, "model_channels": 64})
        model_config.set_inference_dtype(dtype, None)
        model = comfy.model_base.BaseModel(model_config, model_type=comfy.model_base.ModelType.V_PREDICTION)
    elif family == "sdxl":
        model_config = comfy.supported_models.SDXL(dict(SDXL_TINY_UNET_CONFIG))
        model_config.set_inference_dtype(dtype, None)
        model = comfy.model_base.SDXL(model_config, model_type=comfy.model_base.ModelType.EPS)
    else:
        raise ValueError(f"family: expected one of {FAMILIES}, received {family!r}")
    init_random_(model.diffusion_model, seed)
    return model


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


def build_tiny_model_patcher(model_channels: int = 32, seed: int = 0, family: str = "sd15"):
    """A ModelPatcher around a tiny seeded UNet of one family on the CPU (SD1.5 by default).

    ``model_channels`` applies to the SD1.5 model; the SD2 and SDXL ones use build_tiny_base_model's sizes.
    """
    import comfy.model_patcher

    if family == "sd15":
        model = build_sd15_base_model(model_channels, seed, torch.float32)
    else:
        model = build_tiny_base_model(family, seed, torch.float32)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def random_family_cond(family: str, seed: int, batch: int = 1, chunks: int = 1) -> list:
    """A seeded CONDITIONING list shaped like the family's text encoder output (context, SDXL's pooled)."""
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(batch, 77 * chunks, CONTEXT_DIM[family], generator=g)
    extra = {}
    if POOLED_DIM[family]:
        extra["pooled_output"] = torch.randn(batch, POOLED_DIM[family], generator=g)
    return [[ctx, extra]]


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


def build_tiny_pixart_model_patcher(seed: int = 0):
    """A ModelPatcher around a tiny seeded PixArt-alpha DiT (ComfyUI's own class): a model the pack refuses."""
    import comfy.model_patcher
    import comfy.supported_models

    model_config = comfy.supported_models.PixArtAlpha(
        {
            "image_model": "pixart_alpha", "input_size": 16, "patch_size": 2, "in_channels": 4,
            "hidden_size": 64, "depth": 2, "num_heads": 2, "caption_channels": 64, "pe_interpolation": 0.5,
            "micro_condition": False,
        }
    )  # fmt: skip
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    init_random_(model.diffusion_model, seed)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


# --- SDXL-family single-file checkpoint and SD1.5 diffusers folder ---------------------------------------

# Segmind Vega's layout: the smallest SDXL-family UNet ComfyUI detects from a checkpoint (transformer
# depth 1 at the 1/16 level and 2 at the 1/32 level, no middle-block attention, context 2048, adm 2816).
SDXL_VEGA_UNET_CONFIG: dict = {
    **SDXL_TINY_UNET_CONFIG,
    "model_channels": 320,
    "transformer_depth": [0, 0, 1, 1, 2, 2],
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 2, 2, 2],
    "transformer_depth_middle": -1,
}

RANDOM_SDXL_CHECKPOINT_NAME = "cxr_random_sdxl_vega_seed{seed}.safetensors"


def random_vae(seed: int, dtype: torch.dtype):
    import comfy.ldm.models.autoencoder

    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dict(SD15_VAE_DDCONFIG), embed_dim=4)
    return init_random_(vae.to(dtype), seed)


def fp16_state_dict(sd: dict) -> dict:
    return {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def write_atomically(path: Path, write) -> Path:  # noqa: ANN001
    import shutil

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()
    write(tmp)
    os.replace(tmp, path)
    return path


def random_sdxl_checkpoint_path(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    return Path(cache_dir) / "checkpoints" / RANDOM_SDXL_CHECKPOINT_NAME.format(seed=seed)


def ensure_random_sdxl_checkpoint(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the random SDXL-family (Segmind Vega layout) checkpoint once; later calls reuse it."""
    path = random_sdxl_checkpoint_path(cache_dir, seed)
    if not path.is_file():
        log.info("generating a random SDXL-family checkpoint (seed %d) at %s", seed, path)
    return write_atomically(path, lambda tmp: write_random_sdxl_checkpoint(tmp, seed))


@torch.no_grad()
def write_random_sdxl_checkpoint(path: str | os.PathLike, seed: int = 0) -> None:
    """UNet (Segmind Vega layout) + CLIP-L + CLIP-G text encoders + VAE, fp16, SDXL's checkpoint layout.

    ComfyUI's CheckpointLoaderSimple detects it as an SDXL-family model (Segmind_Vega) with SDXL's two
    text encoders. The text encoders are full size: the host builds them from fixed configurations.
    """
    import comfy.model_base
    import comfy.sdxl_clip
    import comfy.supported_models
    import safetensors.torch

    dtype = torch.float16
    model_config = comfy.supported_models.Segmind_Vega(dict(SDXL_VEGA_UNET_CONFIG))
    model_config.set_inference_dtype(dtype, None)
    model = comfy.model_base.SDXL(model_config, model_type=comfy.model_base.ModelType.EPS)
    init_random_(model.diffusion_model, seed)
    clip = comfy.sdxl_clip.SDXLClipModel(device="cpu", dtype=dtype)
    init_random_(clip, seed + 1)
    clip_sd = clip.state_dict()
    sd = model.state_dict_for_saving(clip_sd, random_vae(seed + 2, dtype).state_dict())
    metadata = {
        "cxr_counterfactual": "random-weights",
        "seed": str(seed),
        "warning": "randomly initialised SDXL-family architecture: shows mechanics, not medicine",
    }
    safetensors.torch.save_file(fp16_state_dict(sd), str(path), metadata=metadata)
