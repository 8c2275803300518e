"""The metrics of CXRMetrics as a small table for the node's panel in the editor (js/cxr_panels.js).

One row per figure, one column per scored image; the values are formatted here
so that the editor only lays out strings. The figures are defined in the
README's Metrics section; the records come from cxr_core/metrics/report.py.
"""

from __future__ import annotations

from typing import Any

ROWS: tuple[tuple[str, str, int, str], ...] = (  # (record key, label, decimals, unit)
    ("ssim_global", "SSIM global", 4, ""),
    ("ssim_outside", "SSIM outside region", 4, ""),
    ("ssim_inside", "SSIM inside region", 4, ""),
    ("psnr_global_db", "PSNR global", 2, " dB"),
    ("psnr_outside_db", "PSNR outside region", 2, " dB"),
    ("mae_global", "MAE global", 4, ""),
    ("mae_outside", "MAE outside region", 4, ""),
    ("mae_inside", "MAE inside region", 4, ""),
    ("localisation", "Edit localisation", 3, ""),
    ("clip_i", "CLIP-I", 4, ""),
)


def _fmt(value: float | None, decimals: int, unit: str = "", infinite: bool = False) -> str:
    if infinite:
        return "inf" + unit
    return "n/a" if value is None else f"{value:.{decimals}f}{unit}"


def metrics_table(records: list[dict[str, Any]], notes: list[str] | None = None) -> dict[str, Any]:
    """{"columns": [...], "rows": [[label, value, ...], ...], "notes": [...]} for the editor's table."""
    columns = ["metric", *(f"image {r['image_index']}" for r in records)]
    rows = []
    for key, label, decimals, unit in ROWS:
        inf_key = key.replace("_db", "_infinite") if key.endswith("_db") else ""  # PSNR of identical images
        rows.append([label, *(_fmt(r[key], decimals, unit, bool(r.get(inf_key))) for r in records)])
    rows.append(["Region fraction", *(_fmt(None if r["region_fraction"] is None else 100 * r["region_fraction"],
                                           1, " %") for r in records)])  # fmt: skip
    organs = list(dict.fromkeys(name for r in records for name in r["ssim_organs"]))
    for organ in organs:
        rows.append([f"SSIM {organ}", *(_fmt(r["ssim_organs"].get(organ), 4) for r in records)])
    if any(r["validity"].get("available") for r in records):  # else the notes say why it is unavailable
        for what in ("p_before", "p_after", "delta"):
            label = {
                "p_before": "Validity p before",
                "p_after": "Validity p after",
                "delta": "Validity delta",
            }[what]
            rows.append([label, *(_fmt(r["validity"].get(what), 3) for r in records)])
    table_notes = list(notes or [])
    for r in records:
        table_notes.extend(f"image {r['image_index']}: {k}: {v}" for k, v in r["null_reasons"].items())
        if r["validity"].get("reason"):
            table_notes.append(f"image {r['image_index']}: validity: {r['validity']['reason']}")
    return {"columns": columns, "rows": rows, "notes": table_notes}
