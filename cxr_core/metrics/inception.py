"""Inception-v3 pool features (2048-d) from a weight file on the user's disk; nothing is downloaded.

The architecture is ``torchvision.models.inception_v3``; the file is a
safetensors file or a state dict saved with ``torch.save`` (read with
``weights_only=True``, never unpickling objects). Two layouts are recognised:

- torchvision's ImageNet weights (1000 classes, with or without ``AuxLogits``);
- the FID weights of pytorch-fid (``pt_inception-2015-12-05``: 1008 classes, no
  aux head). For those, the Mixed blocks are switched to the FID variants that
  pytorch-fid defines (average pooling without padded zeros in A, C and the first
  E block; max pooling in the last E block), following the TensorFlow graph FID
  was defined on.

Input: RGB in [0, 1], resized to 299 x 299 (bilinear) and scaled to [-1, 1], as
pytorch-fid does. Features are the global-average-pooled output of Mixed_7c.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models import inception as tvi

from .features import ExtractorInfo, module_fingerprint
from .prep import to_rgb

log = logging.getLogger("cxr_counterfactual.metrics.inception")

FID_CLASSES = 1008
SIZE = 299


class _FIDInceptionA(tvi.InceptionA):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b5, b3, bp], 1)


class _FIDInceptionC(tvi.InceptionC):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            bd = layer(bd)
        bd = self.branch7x7dbl_5(bd)
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class _FIDInceptionE(tvi.InceptionE):
    max_pool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool:
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class _FIDInceptionE2(_FIDInceptionE):
    max_pool = True


def _to_fid_blocks(model: tvi.Inception3) -> None:
    """Switch the Mixed blocks to pytorch-fid's FID variants (same parameters, other pooling)."""
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        getattr(model, name).__class__ = _FIDInceptionA
    for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        getattr(model, name).__class__ = _FIDInceptionC
    model.Mixed_7b.__class__ = _FIDInceptionE
    model.Mixed_7c.__class__ = _FIDInceptionE2


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or of a ``torch.save``d state dict (``weights_only=True``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # an UnpicklingError for whole pickled models, among others
        raise ValueError(
            f"weights: {path.name} is not a plain state dict ({type(e).__name__}: {str(e)[:200]}); "
            "expected a safetensors file or a torch.save(model.state_dict()) file. Convert whole pickled "
            "models once, in a trusted session, with safetensors.torch.save_file(model.state_dict(), ...)"
        ) from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"weights: {path.name} holds {type(sd).__name__}, expected a dict of tensors")
    return sd


def file_fingerprint(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class InceptionFeatures:
    """An Inception-v3 feature extractor loaded from a file; features run on the images' device."""

    def __init__(self, model: tvi.Inception3, info: ExtractorInfo) -> None:
        self.model = model
        self.info = info

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = to_rgb(images).movedim(-1, 1).float()  # (B, 3, H, W)
        if next(self.model.parameters()).device != x.device:
            self.model.to(x.device)
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        return self.model(2.0 * x - 1.0)  # (B, 2048)


def load_inception(path: str | os.PathLike) -> InceptionFeatures:
    """Build torchvision's inception_v3 and load the file's weights (strict)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights: expected an Inception-v3 weight file, '{path.name}' does not exist")
    sd = read_state_dict(path)
    if "fc.weight" not in sd or "Mixed_7c.branch_pool.conv.weight" not in sd:
        raise ValueError(
            f"weights: {path.name} is not an Inception-v3 state dict (expected keys such as 'fc.weight' and "
            f"'Mixed_7c.branch_pool.conv.weight'; found e.g. {sorted(sd)[:4]})"
        )
    num_classes = int(sd["fc.weight"].shape[0])
    aux = any(k.startswith("AuxLogits.") for k in sd)
    model = tvi.inception_v3(
        weights=None, num_classes=num_classes, aux_logits=aux, transform_input=False, init_weights=False
    )
    fid_variant = num_classes == FID_CLASSES
    if fid_variant:
        _to_fid_blocks(model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"weights: {path.name} does not fit torchvision's inception_v3 "
            f"(missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    fingerprint = module_fingerprint(model, "inception_v3")  # of the weights, whatever the file format
    model.fc = torch.nn.Identity()
    model.dropout = torch.nn.Identity()
    model.eval().requires_grad_(False)
    variant = "pytorch-fid FID blocks" if fid_variant else "torchvision blocks"
    info = ExtractorInfo("inception", f"inception_v3 {path.name} ({variant})", fingerprint, 2048)
    log.info("loaded %s", info.name)
    return InceptionFeatures(model, info)
