"""Gradients through ComfyUI's UNet under inference mode (docs/METHOD.md section 4, "Gradient pass").

ComfyUI loads weights under ``torch.inference_mode()``; inference tensors cannot
be saved for backward, so a gradient pass through them fails. For the length of
one pass, every inference-tensor parameter of the UNet is replaced by an ordinary
tensor that *aliases the same storage* (no copy: the weights cost no extra
memory), and the original Parameter objects are put back afterwards, so the
shared, cached model is unchanged (same objects, same values). Weights that
ComfyUI casts or offloads (low-VRAM mode, LoRA weight functions) are copied by
ComfyUI itself as usual, and those copies are ordinary tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _alias(t: torch.Tensor) -> torch.Tensor:
    """An ordinary (non-inference) tensor viewing t's storage; called outside inference mode."""
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(
        t.untyped_storage(), t.storage_offset(), t.size(), t.stride()
    )


AliasCache = dict  # Parameter -> (its storage layout, the alias Parameter), for one sampling run


def _alias_parameter(p: torch.nn.Parameter, cache: AliasCache | None) -> torch.nn.Parameter:
    """An alias Parameter of p; with a cache, the one made earlier while p still views the same storage."""
    layout = (p.data_ptr(), p.device, p.dtype, tuple(p.size()), p.stride(), p.storage_offset())
    hit = cache.get(p) if cache is not None else None
    if hit is not None and hit[0] == layout:
        return hit[1]
    alias = torch.nn.Parameter(_alias(p), requires_grad=False)
    if cache is not None:
        cache[p] = (layout, alias)
    return alias


@contextmanager
def autograd_compatible_weights(module: torch.nn.Module, cache: AliasCache | None = None) -> Iterator[int]:
    """Within the block, the inference-tensor parameters of ``module`` are aliases autograd can save.

    Yields the number of parameters swapped. The model's own Parameter objects are restored in
    ``finally``, also when the pass raises (e.g. the energy probe's early stop). ``cache``: a dict that
    lives for one sampling run, so its later gradient passes reuse the aliases instead of building
    hundreds of objects again (Python time a GPU step cannot hide). It holds the aliases, and so the
    weights' storage, only as long as the caller keeps it: never keep one across runs, or a weight
    that ComfyUI offloads would stay allocated on the device.
    """
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    try:
        with torch.inference_mode(False):
            for m in module.modules():
                for name, p in list(m._parameters.items()):
                    if p is not None and p.is_inference():
                        swapped.append((m, name, p))
                        m._parameters[name] = _alias_parameter(p, cache)
        yield len(swapped)
    finally:
        for m, name, p in reversed(swapped):
            m._parameters[name] = p


@contextmanager
def gradient_pass() -> Iterator[None]:
    """Leave inference mode and enable grad (context-manager form: the decorator form failed in some torch)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield
