"""Ablation studies: run workflow variants over one manifest, then tabulate mean and std per metric.

Study file (JSON)::

    {"manifest": "rows.csv", "map": {"seed": "Sampler.seed"},
     "variants": {"full": "example_workflows/api/cxr_counterfactual_full.json",
                  "no gate": "example_workflows/api/ablation_no_gate.json"},
     "metrics": ["ssim_outside", "localisation"], "retries": 1}

Paths are relative to the study file. Each variant writes to <out>/<variant>/;
the aggregate goes to <out>/study.md and <out>/study.png.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from .manifest import (
    ManifestError,
    ManifestJob,
    ResultStore,
    _flatten,
    parse_mapping,
    read_manifest,
    run_manifest,
)

DEFAULT_METRICS = ("ssim_global", "ssim_outside", "ssim_inside", "psnr_global_db", "mae_outside", "localisation",
                   "clip_i")  # fmt: skip


def load_study(path: Path) -> dict:
    spec = json.loads(path.read_text())
    for key in ("manifest", "variants"):
        if key not in spec:
            raise ManifestError(f"study {path.name}: missing '{key}'")
    base = path.parent
    spec["manifest"] = base / spec["manifest"]
    spec["variants"] = {name: base / wf for name, wf in spec["variants"].items()}
    return spec


def run_study(
    spec: dict, out: Path, servers: list[str], show_progress: bool | None = None
) -> dict[str, dict]:
    mapping = parse_mapping([f"{c}={t}" for c, t in spec.get("map", {}).items()])
    rows = read_manifest(Path(spec["manifest"]), mapping)
    counts = {}
    for name, wf in spec["variants"].items():
        job = ManifestJob(workflow=json.loads(Path(wf).read_text()), out_dir=out / _slug(name), servers=servers,
                          mapping=mapping, retries=int(spec.get("retries", 1)), show_progress=show_progress)  # fmt: skip
        counts[name] = run_manifest(job, rows)
    return counts


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def collect(results: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    """{variant: [flattened metric dicts of its successful rows]} from result folders."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, folder in results.items():
        recs = [r for r in ResultStore(folder).latest().values() if r["status"] == "ok"]
        out[name] = [_flatten(m) for r in recs for m in r.get("metrics") or []]
    return out


def aggregate(per_variant: dict[str, list[dict[str, Any]]], metrics: tuple[str, ...] | list[str] | None = None
              ) -> dict[str, dict[str, tuple[float, float, int]]]:  # fmt: skip
    """{variant: {metric: (mean, sample std, n)}} over numeric, non-null values."""
    wanted = list(metrics or DEFAULT_METRICS)
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for name, recs in per_variant.items():
        table[name] = {}
        for m in wanted:
            vals = [
                float(r[m])
                for r in recs
                if isinstance(r.get(m), int | float) and not isinstance(r.get(m), bool)
            ]
            vals = [v for v in vals if math.isfinite(v)]
            if vals:
                mean = sum(vals) / len(vals)
                std = (
                    math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
                )
                table[name][m] = (mean, std, len(vals))
    return table


def markdown(table: dict[str, dict[str, tuple[float, float, int]]]) -> str:
    metrics = [m for m in DEFAULT_METRICS if any(m in t for t in table.values())]
    metrics += sorted({m for t in table.values() for m in t} - set(metrics))
    lines = ["| variant | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name, t in table.items():
        n = max((v[2] for v in t.values()), default=0)
        cells = [f"{t[m][0]:.4f} ± {t[m][1]:.4f}" if m in t else "n/a" for m in metrics]
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(table: dict[str, dict[str, tuple[float, float, int]]], path: Path) -> None:
    """One panel per metric, a bar per variant with a +-std whisker (Pillow only)."""
    metrics = [m for m in DEFAULT_METRICS if any(m in t for t in table.values())]
    metrics += sorted({m for t in table.values() for m in t} - set(metrics))
    variants = list(table)
    pw, ph, pad = 260, 220, 30
    cols = max(1, min(3, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / cols))
    im = Image.new("RGB", (cols * pw, rows * ph + 20 + 16 * len(variants)), "white")
    d = ImageDraw.Draw(im)
    palette = [
        (52, 101, 164),
        (204, 0, 0),
        (78, 154, 6),
        (245, 121, 0),
        (117, 80, 123),
        (193, 125, 17),
        (85, 87, 83),
    ]
    for k, m in enumerate(metrics):
        x0, y0 = (k % cols) * pw, (k // cols) * ph
        vals = [table[v].get(m) for v in variants]
        top = max((a + s for a, s, _ in filter(None, vals)), default=1.0) or 1.0
        bottom = min(0.0, min((a - s for a, s, _ in filter(None, vals)), default=0.0))
        scale = (ph - 2 * pad) / (top - bottom if top > bottom else 1.0)
        base_y = y0 + ph - pad + bottom * scale
        d.text((x0 + 8, y0 + 6), m, fill="black")
        d.line([(x0 + pad, base_y), (x0 + pw - 10, base_y)], fill="gray")
        bw = (pw - pad - 20) / max(len(variants), 1)
        for j, val in enumerate(vals):
            if val is None:
                continue
            mean, std, _ = val
            bx = x0 + pad + j * bw + 4
            d.rectangle([bx, base_y - mean * scale, bx + bw - 8, base_y], fill=palette[j % len(palette)])
            cx = bx + (bw - 8) / 2
            d.line(
                [(cx, base_y - (mean + std) * scale), (cx, base_y - (mean - std) * scale)],
                fill="black",
                width=2,
            )
    ly = rows * ph + 4
    for j, v in enumerate(variants):
        d.rectangle([8, ly + 16 * j + 2, 18, ly + 16 * j + 12], fill=palette[j % len(palette)])
        d.text((24, ly + 16 * j), v, fill="black")
    im.save(path)


def write_report(table: dict[str, dict[str, tuple[float, float, int]]], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / "study.md", out / "study.png"
    md.write_text("Mean ± sample standard deviation over the rows that succeeded.\n\n" + markdown(table))
    chart(table, png)
    return md, png
