"""Image features: CLIP-I and the extractors FID statistics are built from.

CLIP-I (README.md, "Metrics") is the cosine similarity of the CLIP image embeddings
(``image_embeds``, the projected pooled output) of original and counterfactual,
from a CLIP_VISION model (``comfy.clip_vision.ClipVisionModel`` or anything with
``encode_image(image) -> {"image_embeds": (B, D)}``). ComfyUI's own
preprocessing applies (resize the short side, centre crop, CLIP mean/std); grey
images are repeated to RGB.

Every feature set carries an ``ExtractorInfo`` so FID never mixes features of
different models: a fingerprint hashes names, shapes and leading values of
every weight tensor.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from .prep import to_rgb

log = logging.getLogger("cxr_counterfactual.metrics.features")


@dataclass(frozen=True)
class ExtractorInfo:
    kind: str  # "clip_vision" | "inception"
    name: str  # human-readable (architecture, file name)
    fingerprint: str  # hex digest identifying the weights
    dim: int  # feature dimension

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeatureExtractor(Protocol):
    info: ExtractorInfo

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) in [0, 1] -> (B, D) float features."""
        ...


def module_fingerprint(module: torch.nn.Module, extra: str = "") -> str:
    """A digest of a module's weights: every tensor's name, shape and first 64 values."""
    h = hashlib.sha256(extra.encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}".encode())
        if t.numel() and t.is_floating_point():
            h.update(t.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def clip_image_embeds(clip_vision: Any, images: torch.Tensor) -> torch.Tensor:
    """CLIP image embeddings (B, D) of IMAGE (B, H, W, C), on the images' device."""
    out = clip_vision.encode_image(to_rgb(images))
    emb = out["image_embeds"]
    if emb.ndim != 2:
        emb = emb.reshape(emb.shape[0], -1)
    return emb.float().to(images.device)


def clip_i(clip_vision: Any, original: torch.Tensor, counterfactual: torch.Tensor) -> torch.Tensor:
    """CLIP-I per pair: cosine similarity of the embeddings, (B,)."""
    emb = clip_image_embeds(clip_vision, torch.cat([original, counterfactual], dim=0))
    a, b = emb.chunk(2, dim=0)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


class ClipVisionFeatures:
    """FID features from a CLIP_VISION model: its ``image_embeds``."""

    def __init__(self, clip_vision: Any) -> None:
        self.clip_vision = clip_vision
        model = getattr(clip_vision, "model", None)
        name = type(model).__name__ if model is not None else type(clip_vision).__name__
        size = getattr(clip_vision, "image_size", "?")
        fp = (
            module_fingerprint(model, f"clip_vision:{size}")
            if isinstance(model, torch.nn.Module)
            else "unknown"
        )
        self._name = f"CLIP_VISION {name} ({size}px)"
        self._fingerprint = fp
        self._dim: int | None = None

    @property
    def info(self) -> ExtractorInfo:
        return ExtractorInfo("clip_vision", self._name, self._fingerprint, self._dim or 0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        emb = clip_image_embeds(self.clip_vision, images)
        self._dim = int(emb.shape[-1])
        return emb
