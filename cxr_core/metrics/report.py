"""The per-image metrics record: JSON-safe dict and readable summary lines.

One record per image (the README's "JSON record" lists every field; the metrics
are registry.py's, in its order). Non-finite
numbers never reach JSON: a missing figure is ``null`` with its reason in
``null_reasons``; an infinite PSNR (identical images, MSE 0) is ``null`` with
``psnr_*_infinite: true`` and a reason.
"""

from __future__ import annotations

import math
from typing import Any

from .image_scores import PairScores
from .registry import METRICS, REGION_TEXT

SCHEMA_VERSION = 1


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def build_record(
    scores: PairScores,
    *,
    run_tag: str,
    image_index: int,
    batch_size: int,
    size: tuple[int, int],
    channels: tuple[int, int],
    excluded_organs: list[str],
    clip_i: float | None,
    clip_reason: str | None,
    validity: dict[str, Any],
) -> dict[str, Any]:
    """One image's record: run fields, then every metric of the registry in its order."""
    reasons = dict(scores.null_reasons)
    if clip_i is None and clip_reason:
        reasons["clip_i"] = clip_reason
    values = {**scores.values, "clip_i": clip_i}
    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_tag": run_tag,
        "image_index": image_index,
        "batch_size": batch_size,
        "height": size[0],
        "width": size[1],
        "original_channels": channels[0],
        "counterfactual_channels": channels[1],
    }
    for metric in METRICS:
        if metric.kind == "validity":
            rec[metric.name] = validity
        elif metric.kind == "per_organ":
            rec[metric.name] = {k: _finite(v) for k, v in scores.ssim_organs.items()}
            rec["excluded_organs"] = list(excluded_organs)
        else:
            value = values.get(metric.name)
            rec[metric.name] = _finite(value)
            if metric.infinite_flag:
                rec[metric.infinite_flag] = value is not None and math.isinf(value)
                if rec[metric.infinite_flag]:
                    reasons[metric.name] = f"infinite: {REGION_TEXT[metric.region]} are identical (MSE 0)"
    rec["null_reasons"] = reasons
    return rec


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _psnr(rec: dict[str, Any], key: str) -> str:
    if rec[key.replace("_db", "_infinite")]:
        return "inf dB"
    return "n/a" if rec[key] is None else f"{rec[key]:.2f} dB"


def summary_lines(rec: dict[str, Any]) -> list[str]:
    """Human-readable lines for the node's UI (the js/ extension shows them under the node)."""
    i = rec["image_index"]
    lines = [
        f"[{i}] SSIM global {_fmt(rec['ssim_global'])} | outside {_fmt(rec['ssim_outside'])} "
        f"| inside {_fmt(rec['ssim_inside'])}",
        f"[{i}] PSNR {_psnr(rec, 'psnr_global_db')} (outside {_psnr(rec, 'psnr_outside_db')}) "
        f"| MAE {_fmt(rec['mae_global'])} (outside {_fmt(rec['mae_outside'])})",
        f"[{i}] localisation {_fmt(rec['localisation'], 3)} | CLIP-I {_fmt(rec['clip_i'])} "
        f"| region {rec['region_fraction']:.1%}",
    ]
    if rec["ssim_organs"]:
        organs = ", ".join(f"{k} {_fmt(v)}" for k, v in rec["ssim_organs"].items())
        lines.append(f"[{i}] organ SSIM: {organs}")
    v = rec["validity"]
    if v.get("available"):
        lines.append(
            f"[{i}] validity {v['label']}: p {_fmt(v['p_before'], 3)} -> {_fmt(v['p_after'], 3)} "
            f"(delta {v['delta']:+.3f})"
        )
    else:
        lines.append(f"[{i}] validity unavailable: {v.get('reason')}")
    lines.extend(f"[{i}] note {key}: {reason}" for key, reason in rec["null_reasons"].items())
    return lines
