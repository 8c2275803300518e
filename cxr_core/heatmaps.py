"""Render attention maps as heatmaps over a radiograph, with a colour bar."""

from __future__ import annotations

import cv2
import numpy as np
import torch

BAR_WIDTH = 64


def render_heatmap(
    background: torch.Tensor, heat: torch.Tensor, label: str, alpha: float = 0.5
) -> torch.Tensor:
    """Overlay ``heat`` (h, w) on ``background`` (H, W, 3) in [0, 1]; returns (H, W + BAR_WIDTH, 3) in [0, 1].

    The map is resized bilinearly to the image, scaled to its own range for
    display, and coloured with the jet map; the bar on the right gives the
    attention values that its colours stand for.
    """
    bg = background.detach().float().cpu().clamp(0, 1).numpy()
    h, w = bg.shape[:2]
    m = heat.detach().float().cpu().numpy()
    lo, hi = float(m.min()), float(m.max())
    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    norm = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    blended = (1.0 - alpha) * bg + alpha * _jet(norm).astype(np.float32) / 255.0
    out = np.ascontiguousarray(np.clip(blended * 255.0 + 0.5, 0, 255), dtype=np.uint8)
    _text(out, label, (6, 18))
    panel = np.concatenate([out, _colour_bar(h, lo, hi)], axis=1)
    return torch.from_numpy(panel.astype(np.float32) / 255.0)


def _jet(x: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) uint8 RGB."""
    u8 = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def _colour_bar(h: int, lo: float, hi: float) -> np.ndarray:
    bar = np.full((h, BAR_WIDTH, 3), 30, dtype=np.uint8)
    top, bottom = 24, max(25, h - 24)
    ramp = np.linspace(1.0, 0.0, bottom - top, dtype=np.float32)[:, None]
    bar[top:bottom, 6:22] = _jet(np.repeat(ramp, 16, axis=1))
    _text(bar, f"{hi:.3g}", (2, 16), scale=0.38)
    _text(bar, f"{lo:.3g}", (2, min(h - 6, bottom + 16)), scale=0.38)
    return bar


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45) -> None:
    scale = scale * max(0.6, img.shape[0] / 512)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
