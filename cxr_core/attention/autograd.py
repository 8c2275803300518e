"""Gradients through ComfyUI's UNet under inference mode (docs/COMFYUI.md, "Gradients").

ComfyUI loads weights under ``torch.inference_mode()``; inference tensors
cannot be saved for backward. For one pass, every comfy.ops module gets an
identity weight (and bias) function: ``cast_bias_weight`` then copies the
weights on each forward, and the copies are ordinary tensors. The lists are
restored exactly afterwards (the class-level defaults are never mutated), so
the shared, cached model is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_MISSING = object()


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@contextmanager
def autograd_compatible_weights(module: torch.nn.Module) -> Iterator[int]:
    """Within the block, weights of ``module`` reach autograd as copies. Yields the module count."""
    touched: list[tuple[torch.nn.Module, object, object]] = []
    try:
        for m in module.modules():
            if not hasattr(m, "weight_function") or getattr(m, "weight", None) is None:
                continue
            touched.append(
                (m, m.__dict__.get("weight_function", _MISSING), m.__dict__.get("bias_function", _MISSING))
            )
            m.weight_function = [*m.weight_function, _identity]
            if getattr(m, "bias", None) is not None:
                m.bias_function = [*m.bias_function, _identity]
        yield len(touched)
    finally:
        for m, wf, bf in reversed(touched):
            for name, old in (("weight_function", wf), ("bias_function", bf)):
                if old is _MISSING:
                    m.__dict__.pop(name, None)
                else:
                    setattr(m, name, old)


@contextmanager
def gradient_pass() -> Iterator[None]:
    """Leave inference mode and enable grad (context-manager form, see COMFYUI.md)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield
