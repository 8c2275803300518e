"""Organ masks from torchxrayvision's segmentation models, only from weight files already on disk.

Two models: the ChestX-Det PSPNet (14 anatomy classes) and the CXAS-trained
UNet-ResNet50 (159 classes). torchxrayvision's own constructors download
missing weights, so they are not called with weights: the network is built
empty and the user's file is loaded here. Nothing is ever downloaded; a missing
package or weight file is an error that says what to install and where to put
the file.

Weights: ``.safetensors`` (read with safetensors) or ``.pth``/``.pt`` read with
``torch.load(weights_only=True)``, PyTorch's restricted loader that accepts
tensors and plain containers only (no arbitrary objects).

Input: the radiograph in [0, 1] is letterboxed to 512 x 512 (pad with black;
torchxrayvision's own demo centre-crops, which would cut the lateral lung
edges), mapped to torchxrayvision's [-1024, 1024] range, segmented, and the
sigmoid probabilities are mapped back to the radiograph's size.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import ImageGeometry
from .input_paths import shown_path
from .label_schemes import CHESTX_DET_CLASSES, CXAS_CLASSES, canonical_class_name
from .mask_sources import MaskSourceError, RawMasks

log = logging.getLogger("cxr_counterfactual.segmentation_models")

MODEL_INPUT = 512
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SegModelSpec:
    key: str
    default_weights: str  # torchxrayvision's file name for it
    classes: tuple[str, ...]
    scheme: str


SEG_MODELS: dict[str, SegModelSpec] = {
    "chestx_det_pspnet": SegModelSpec(
        "chestx_det_pspnet", "pspnet_chestxray_best_model_4.pth", CHESTX_DET_CLASSES, "chestx-det"
    ),
    "cxas_unet_resnet50": SegModelSpec(
        "cxas_unet_resnet50", "baseline_models_cxas_UNet_ResNet50_default_repack.pth", CXAS_CLASSES, "cxas"
    ),
}


class SegmentationModelError(MaskSourceError):
    """The segmentation model cannot run here, with what to install or where to put the weights."""


def default_weight_dirs() -> list[Path]:
    """torchxrayvision's own weight cache (where its constructors would have saved downloads)."""
    return [Path(os.path.expanduser("~/.torchxrayvision/models_data"))]


def locate_weights(model: str, weights_name: str, search_dirs: list[Path]) -> Path:
    """The weight file ``weights_name`` (a plain file name; empty = the model's default) in ``search_dirs``."""
    spec = model_spec(model)
    name = (weights_name or "").strip() or spec.default_weights
    if Path(name).name != name or name in (".", ".."):
        raise SegmentationModelError(
            f"weights: give a plain file name (received '{name}'); the file is looked up in "
            f"{[shown_path(d) for d in search_dirs]}"
        )
    for d in search_dirs:
        p = Path(d) / name
        if p.is_file():
            return p
    raise SegmentationModelError(
        f"weights: '{name}' for {model} is not on this machine (looked in {[shown_path(d) for d in search_dirs]}). "
        f"Nothing is downloaded by this pack: copy torchxrayvision's '{spec.default_weights}' (from its GitHub "
        "releases, or ~/.torchxrayvision/models_data after torchxrayvision downloaded it) into one of those "
        "folders"
    )


def model_spec(model: str) -> SegModelSpec:
    if model not in SEG_MODELS:
        raise SegmentationModelError(f"model must be one of {sorted(SEG_MODELS)}, received '{model}'")
    return SEG_MODELS[model]


def require_torchxrayvision() -> None:
    if importlib.util.find_spec("torchxrayvision") is None:
        raise SegmentationModelError(
            "source 'torchxrayvision' needs the torchxrayvision package, which is not installed in ComfyUI's "
            "Python. Install it there (`python -m pip install torchxrayvision`), or bring masks another way "
            "(label map, mask folder, NPZ, CheXmask CSV)"
        )


def check_available(model: str, weights_name: str, search_dirs: list[Path]) -> Path:
    """Both the package and the weight file, reporting every missing piece in one message."""
    problems, path = [], None
    try:
        require_torchxrayvision()
    except SegmentationModelError as exc:
        problems.append(str(exc))
    try:
        path = locate_weights(model, weights_name, search_dirs)
    except SegmentationModelError as exc:
        problems.append(str(exc))
    if problems:
        raise SegmentationModelError(" | ".join(problems))
    return path


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # the restricted loader refuses pickled objects
            raise SegmentationModelError(
                f"weights: '{path.name}' cannot be read with torch.load(weights_only=True) ({exc}); convert it "
                "to .safetensors (safetensors.torch.save_file(state_dict, ...)) in a trusted environment"
            ) from exc
    for key in ("model", "state_dict", "model_state_dict", "network", "net"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict):
        raise SegmentationModelError(f"weights: '{path.name}' holds {type(sd).__name__}, not a state dict")
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "model.", "net."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        out[k] = v
    return out


def build_model(model: str, weights_path: Path) -> torch.nn.Module:
    """The network with the user's weights, in eval mode. Needs torchxrayvision."""
    require_torchxrayvision()
    sd = load_state_dict(weights_path)
    if model == "chestx_det_pspnet":
        pspnet = importlib.import_module("torchxrayvision.baseline_models.chestx_det.ptsemseg.pspnet").pspnet
        net = pspnet(len(CHESTX_DET_CLASSES))
        net.load_state_dict(sd)
    else:
        try:
            anatomy = importlib.import_module("torchxrayvision.baseline_models.chestx_anatomy")
        except ImportError as exc:
            raise SegmentationModelError(
                "this torchxrayvision has no CXAS model (baseline_models.chestx_anatomy); upgrade it "
                "(`python -m pip install -U torchxrayvision`)"
            ) from exc
        net = anatomy.UNetResNet50(weights=False)
        if not any(k.startswith("backbone.backbone.") for k in sd):
            sd = {("backbone." + k if k.startswith("backbone.") else k): v for k, v in sd.items()}
        missing, unexpected = net.load_state_dict(sd, strict=False)
        if missing:
            raise SegmentationModelError(
                f"weights: '{weights_path.name}' does not fit the CXAS UNet-ResNet50 ({len(missing)} missing "
                f"tensors, e.g. {missing[:3]})"
            )
    return net.eval()


def prepare_input(grey01: torch.Tensor) -> tuple[torch.Tensor, ImageGeometry]:
    """(H, W) grey in [0, 1] -> (1, 1, 512, 512) in torchxrayvision's [-1024, 1024], and the letterbox used."""
    geo = ImageGeometry.fit(tuple(grey01.shape[-2:]), MODEL_INPUT, "letterbox")
    x = geo.apply(grey01.float(), what="radiograph")  # (512, 512), padding 0 = black
    return (x * 2048.0 - 1024.0)[None, None], geo


def run_network(model: str, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(1, 1, 512, 512) in [-1024, 1024] -> (1, K, 512, 512) logits."""
    if model == "chestx_det_pspnet":  # torchxrayvision's PSPNet.forward, without its download-on-init wrapper
        y = ((x + 1024.0) / 2048.0).repeat(1, 3, 1, 1)
        mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        out = net((y - mean) / std)
    else:
        out = net(x)
    if out.shape[-2:] != x.shape[-2:]:
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out


def logits_to_masks(logits: torch.Tensor, model: str, geo: ImageGeometry) -> RawMasks:
    """(1, K, 512, 512) logits -> sigmoid probabilities at the radiograph's size, one per class with pixels."""
    spec = model_spec(model)
    if logits.ndim != 4 or logits.shape[1] != len(spec.classes):
        raise SegmentationModelError(
            f"{model}: expected (1, {len(spec.classes)}, H, W) logits, received {tuple(logits.shape)}"
        )
    prob = geo.invert(torch.sigmoid(logits.float()[0]), what="segmentation")  # (K, H0, W0)
    names, masks, absent = [], [], []
    for k, cls in enumerate(spec.classes):
        name = canonical_class_name(cls)
        if float(prob[k].max()) < 0.5:
            absent.append(name)
            continue
        names.append(name)
        masks.append(prob[k].clamp(0, 1).cpu().numpy())
    if not masks:
        raise SegmentationModelError(
            f"{model}: the model found no organ in this image (is it a chest radiograph?)"
        )
    return RawMasks(
        tuple(names), np.stack(masks)[None].astype(np.float32), spec.scheme, tuple(absent), {"model": model}
    )


def segment(
    grey01: torch.Tensor,
    model: str,
    weights_name: str,
    search_dirs: list[Path],
    device: torch.device | str = "cpu",
) -> RawMasks:
    """Segment one (H, W) radiograph in [0, 1] with a torchxrayvision model whose weights are on disk."""
    path = check_available(model, weights_name, search_dirs)
    log.info("segmenting with %s (%s)", model, path)
    net = build_model(model, path).to(device)
    x, geo = prepare_input(grey01)
    with torch.no_grad():
        logits = run_network(model, net, x.to(device))
    return logits_to_masks(logits.cpu(), model, geo)
