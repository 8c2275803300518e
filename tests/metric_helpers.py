"""Inputs for the metrics tests: the real demo radiograph, its edits, and tiny seeded feature models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TINY_CLIP_CONFIG = {
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "image_size": 32,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 2,
    "num_channels": 3,
    "num_hidden_layers": 2,
    "patch_size": 8,
    "projection_dim": 16,
    "torch_dtype": "float32",
}


def demo_radiograph(size: int = 256) -> torch.Tensor:
    """pydicom-data's RG1_UNCR.dcm (MONOCHROME1, inverted), scaled to [0, 1], long side ``size``: (H, W)."""
    import data_store
    import pydicom

    path = os.path.join(os.path.dirname(data_store.__file__), "data", "RG1_UNCR.dcm")
    ds = pydicom.dcmread(path)
    a = ds.pixel_array.astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = a.max() - a
    a = (a - a.min()) / (a.max() - a.min())
    t = torch.from_numpy(a)[None, None]
    h, w = a.shape
    s = size / max(h, w)
    t = F.interpolate(t, size=(round(h * s), round(w * s)), mode="area")
    return t[0, 0].float().clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma + 0.5)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(x[None, None], (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))[0, 0]


def lesion_blob(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> torch.Tensor:
    """A soft round blob in [0, 1], centre and radius as fractions of the height."""
    h, w = shape
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    cy, cx, r = centre[0] * h, centre[1] * w, radius * h
    return torch.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))


def demo_pairs(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(original, counterfactual, region) grey (H, W) pairs made from the demo radiograph."""
    x = demo_radiograph()
    g = torch.Generator().manual_seed(seed)
    blob = lesion_blob(tuple(x.shape), (0.62, 0.3), 0.07)
    region = (blob > 0.05).float()
    noise = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    blur = gaussian_blur(x, 2.0)
    lesion = (x + 0.35 * blob * (1 - x)).clamp(0, 1)
    return {"noise": (x, noise, region), "blur": (x, blur, region), "lesion": (x, lesion, region)}


def as_image(grey: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Grey (H, W) or (B, H, W) -> ComfyUI IMAGE (B, H, W, C)."""
    g = grey if grey.ndim == 3 else grey[None]
    return g.unsqueeze(-1).expand(*g.shape, channels).contiguous()


def tiny_clip_vision(tmp_path: Path, seed: int = 0):
    """A seeded random CLIP vision model built with ComfyUI's own classes (hidden size 32, 2 layers)."""
    import comfy.clip_vision

    cfg = tmp_path / "tiny_clip_vision.json"
    cfg.write_text(json.dumps(TINY_CLIP_CONFIG))
    clip = comfy.clip_vision.ClipVisionModel(str(cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in clip.model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 0.05)
    return clip


def random_inception_file(
    path: Path, seed: int = 0, num_classes: int = 1008, aux_logits: bool = False
) -> Path:
    """A randomly initialised torchvision inception_v3 saved as safetensors (the FID layout by default)."""
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    torch.manual_seed(seed)
    model = inception_v3(weights=None, aux_logits=aux_logits, num_classes=num_classes, init_weights=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
