"""Grouped bar chart of a study table with Pillow: one panel per metric, one bar per variant, +-std whiskers."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .aggregate import Table, direction, metric_order

PALETTE = ((52, 101, 164), (204, 0, 0), (78, 154, 6), (245, 121, 0), (117, 80, 123), (193, 125, 17),
           (85, 87, 83), (0, 150, 160), (230, 60, 160), (120, 120, 0))  # fmt: skip
PANEL_W, PANEL_H, PAD_L, PAD_R, PAD_T, PAD_B = 300, 230, 52, 12, 34, 20
LEGEND_ROW = 16


def font(size: int = 13) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans if the system has it, else Pillow's own font at that size (Pillow >= 10.1), else its bitmap font."""
    for attempt in (lambda: ImageFont.truetype("DejaVuSans.ttf", size), lambda: ImageFont.load_default(size)):
        try:
            return attempt()
        except (OSError, TypeError, AttributeError):
            continue
    return ImageFont.load_default()


def colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def bar_chart(table: Table, path: Path, title: str = "", metrics: list[str] | None = None) -> Path:
    """Write the chart to ``path`` (PNG); metrics default to those in the table, in its order."""
    metrics = metrics or metric_order(table)
    variants = list(table)
    cols = max(1, min(3, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / cols))
    top = 24 if title else 4
    width = cols * PANEL_W
    height = top + rows * PANEL_H + 8 + LEGEND_ROW * len(variants)
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    d.font = font()
    if title:
        d.text((8, 5), title, fill="black")
    for k, metric in enumerate(metrics):
        x0, y0 = (k % cols) * PANEL_W, top + (k // cols) * PANEL_H
        _panel(d, table, variants, metric, x0, y0)
    ly = top + rows * PANEL_H + 4
    for j, name in enumerate(variants):
        d.rectangle([8, ly + LEGEND_ROW * j + 2, 20, ly + LEGEND_ROW * j + 12], fill=colour(j))
        d.text((26, ly + LEGEND_ROW * j), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG")
    return path


def _panel(d: ImageDraw.ImageDraw, table: Table, variants: list[str], metric: str, x0: int, y0: int) -> None:
    stats = [table[v].get(metric) for v in variants]
    spans = [(s.mean - (s.std or 0.0), s.mean + (s.std or 0.0)) for s in stats if s is not None]
    lo = min([0.0, *(a for a, _ in spans)])
    hi = max([0.0, *(b for _, b in spans)])
    if hi - lo < 1e-12:
        hi = lo + 1.0
    hi += 0.05 * (hi - lo)
    left, right = x0 + PAD_L, x0 + PANEL_W - PAD_R
    y_top, y_bottom = y0 + PAD_T, y0 + PANEL_H - PAD_B

    def y(v: float) -> float:
        return y_bottom - (v - lo) / (hi - lo) * (y_bottom - y_top)

    better = {"↑": " (higher is better)", "↓": " (lower is better)"}.get(direction(metric), "")
    d.text((x0 + 8, y0 + 6), metric + better, fill="black")
    d.line([(left, y_top), (left, y_bottom)], fill="gray")
    for v in (lo, (lo + hi) / 2, hi):
        d.line([(left - 3, y(v)), (left, y(v))], fill="gray")
        d.text((x0 + 4, y(v) - 7), f"{v:.3g}", fill="gray")
    d.line([(left, y(0.0)), (right, y(0.0))], fill="gray")
    slot = (right - left) / max(len(variants), 1)
    for j, s in enumerate(stats):
        bx0, bx1 = left + j * slot + 0.15 * slot, left + (j + 1) * slot - 0.15 * slot
        if s is None:
            d.text((bx0, y(0.0) - 14), "n/a", fill="gray")
            continue
        ya, yb = sorted((y(0.0), y(s.mean)))
        d.rectangle([bx0, ya, bx1, max(yb, ya + 1)], fill=colour(j))
        if s.std:
            cx = (bx0 + bx1) / 2
            d.line([(cx, y(s.mean + s.std)), (cx, y(s.mean - s.std))], fill="black", width=2)
            for v in (s.mean + s.std, s.mean - s.std):
                d.line([(cx - 4, y(v)), (cx + 4, y(v))], fill="black", width=2)
