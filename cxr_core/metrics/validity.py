"""Counterfactual validity (optional): a pathology classifier's probability before and after.

README.md, "Counterfactual validity": torchxrayvision's DenseNet
(``densenet121-res224-all``) with its operating-point calibration, where 0.5 is
each label's operating point. Used only where torchxrayvision is installed and
the weight file is on disk; nothing is downloaded. torchxrayvision's own cached
``.pt`` files are whole pickled models, which this pack does not unpickle:
convert one once to a state dict (README, "Counterfactual validity").

Without a usable classifier the record says ``available: false`` with the
reason, and every figure is null.

Preprocessing as torchxrayvision's: grey in [0, 1] mapped to [-1024, 1024],
centre-cropped to a square and resized to 224 x 224.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .inception import file_fingerprint, read_state_dict

log = logging.getLogger("cxr_counterfactual.metrics.validity")

XRV_WEIGHTS = "densenet121-res224-all"
INPUT_SIZE = 224
_ALIASES = {
    "pleural effusion": "effusion",
    "heart enlargement": "cardiomegaly",
    "enlarged heart": "cardiomegaly",
    "pulmonary edema": "edema",
    "oedema": "edema",
    "pulmonary oedema": "edema",
    "lung nodule": "nodule",
}


def normalise_label(label: str) -> str:
    key = " ".join(label.lower().replace("_", " ").replace("-", " ").split())
    return _ALIASES.get(key, key)


@dataclass(frozen=True)
class ValidityClassifier:
    """A loaded classifier, or the reason there is none."""

    available: bool
    reason: str | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)
    labels: tuple[str, ...] = ()
    name: str = ""

    def label_index(self, label: str) -> int:
        key = normalise_label(label)
        names = [normalise_label(n) if n else "" for n in self.labels]
        if key not in names:
            raise ValueError(
                f"validity_label: {label!r} is not a label of {self.name}; expected one of "
                f"{[n for n in self.labels if n]}"
            )
        return names.index(key)

    @torch.no_grad()
    def probabilities(self, grey: torch.Tensor) -> torch.Tensor:
        """Grey (B, H, W) in [0, 1] -> calibrated probabilities (B, L), on the images' device."""
        if self.model is None:
            raise ValueError(f"validity classifier unavailable: {self.reason}")
        x = grey.float().unsqueeze(1) * 2048.0 - 1024.0  # (B, 1, H, W) in [-1024, 1024]
        h, w = x.shape[-2:]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        x = x[..., top : top + s, left : left + s]
        x = F.interpolate(
            x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
        param = next(self.model.parameters(), None)
        if param is not None and param.device != x.device:
            self.model.to(x.device)
        return self.model(x).float()


def unavailable(reason: str) -> ValidityClassifier:
    return ValidityClassifier(available=False, reason=reason)


def load_xrv_classifier(path: str | os.PathLike | None) -> ValidityClassifier:
    """torchxrayvision's DenseNet from a local state-dict file, or an unavailable record saying why."""
    if importlib.util.find_spec("torchxrayvision") is None:
        return unavailable(
            "torchxrayvision is not installed (pip install torchxrayvision to enable validity)"
        )
    if not path:
        return unavailable("no classifier weight file given")
    path = Path(path)
    if not path.is_file():
        return unavailable(f"classifier weight file '{path.name}' not found")
    try:
        sd = dict(read_state_dict(path))
    except ValueError as e:
        return unavailable(str(e))
    import torchxrayvision as xrv

    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
    defaults = xrv.models.model_urls[XRV_WEIGHTS]
    op_threshs = sd.pop("op_threshs", None)
    if op_threshs is None:
        op_threshs = torch.tensor(defaults["op_threshs"], dtype=torch.float32)
    labels = tuple(json.loads(meta["labels"])) if "labels" in meta else tuple(defaults["labels"])
    if "classifier.weight" not in sd:
        return unavailable(
            f"{path.name} is not a torchxrayvision DenseNet state dict (no 'classifier.weight')"
        )
    n = int(sd["classifier.weight"].shape[0])
    if n != len(labels) or n != op_threshs.numel():
        return unavailable(
            f"{path.name} has {n} outputs but {len(labels)} labels and {op_threshs.numel()} thresholds"
        )
    model = xrv.models.DenseNet(weights=None, num_classes=n)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        return unavailable(
            f"{path.name} does not fit the DenseNet (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.op_threshs = op_threshs.float()
    model.eval().requires_grad_(False)
    name = f"torchxrayvision DenseNet {path.name} ({file_fingerprint(path)})"
    log.info("loaded validity classifier %s", name)
    return ValidityClassifier(available=True, model=model, labels=labels, name=name)


def validity_record(
    classifier: ValidityClassifier | None, label: str, x0: torch.Tensor, x1: torch.Tensor
) -> dict[str, Any]:
    """The report's ``validity`` field for one grey pair (H, W)."""
    empty = {"available": False, "reason": None, "label": label or None, "classifier": None}
    empty.update(p_before=None, p_after=None, delta=None)
    if classifier is None:
        return {**empty, "reason": "no validity classifier connected"}
    if not classifier.available:
        return {**empty, "reason": classifier.reason}
    if not label.strip():
        return {**empty, "reason": "no validity_label given", "classifier": classifier.name}
    k = classifier.label_index(label)
    p = classifier.probabilities(torch.stack([x0.to(x1.device), x1]))[:, k]
    before, after = float(p[0]), float(p[1])
    return {
        "available": True,
        "reason": None,
        "label": classifier.labels[k],
        "classifier": classifier.name,
        "p_before": before,
        "p_after": after,
        "delta": after - before,
    }
