"""The metrics CSV: fixed, documented columns; one row per image; the header written once.

Rows are appended under an exclusive file lock (``locking.exclusive_lock``), so
concurrent prompts never interleave or duplicate the header. A file whose
header differs from ``CSV_COLUMNS`` (another version, another tool) is refused
rather than mixed. Cell encoding: missing figures are empty cells, infinite
PSNR is ``inf``, booleans are ``true``/``false``, ``ssim_organs`` is
``name=value;name=value``, ``notes`` is ``field: reason | field: reason``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .locking import exclusive_lock

log = logging.getLogger("cxr_counterfactual.metrics.csv_log")

CSV_COLUMNS: tuple[str, ...] = (
    "timestamp_utc",
    "run_tag",
    "image_index",
    "batch_size",
    "height",
    "width",
    "region_fraction",
    "ssim_global",
    "ssim_outside",
    "ssim_inside",
    "ssim_organs",
    "psnr_global_db",
    "psnr_outside_db",
    "mae_global",
    "mae_outside",
    "mae_inside",
    "localisation",
    "max_abs_diff",
    "clip_i",
    "validity_label",
    "validity_p_before",
    "validity_p_after",
    "validity_delta",
    "validity_status",
    "notes",
)


def _cell(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        return "inf" if math.isinf(x) else repr(x)
    return str(x)


def record_to_row(rec: dict[str, Any], timestamp: str | None = None) -> dict[str, str]:
    """Flatten one JSON record (report.build_record) into CSV cells."""
    v = rec.get("validity") or {}
    row = {c: "" for c in CSV_COLUMNS}
    for c in CSV_COLUMNS:
        if c in rec and not isinstance(rec[c], (dict, list)):
            row[c] = _cell(rec[c])
    for key in ("psnr_global_db", "psnr_outside_db"):
        if rec.get(key.replace("_db", "_infinite")):
            row[key] = "inf"
    row["timestamp_utc"] = timestamp or datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    row["ssim_organs"] = ";".join(f"{k}={_cell(val)}" for k, val in (rec.get("ssim_organs") or {}).items())
    row["validity_label"] = _cell(v.get("label"))
    row["validity_p_before"] = _cell(v.get("p_before"))
    row["validity_p_after"] = _cell(v.get("p_after"))
    row["validity_delta"] = _cell(v.get("delta"))
    row["validity_status"] = "ok" if v.get("available") else f"unavailable: {v.get('reason', '')}"
    row["notes"] = " | ".join(f"{k}: {r}" for k, r in (rec.get("null_reasons") or {}).items())
    return row


def _header_line() -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(CSV_COLUMNS)
    return buf.getvalue()


def append_records(path: Path, records: list[dict[str, Any]]) -> int:
    """Append one row per record to ``path`` under an exclusive lock; returns the rows written."""
    timestamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    for rec in records:
        writer.writerow(record_to_row(rec, timestamp))
    header = _header_line()
    with exclusive_lock(path):
        with open(path, "a+", encoding="utf-8", newline="") as fh:
            fh.seek(0)
            first = fh.readline()
            if first and first != header:
                raise ValueError(
                    f"csv_name: {path} exists with different columns (first line {first.strip()[:120]!r}); "
                    f"expected the header {header.strip()!r}. Choose a new csv_name for this version's rows"
                )
            fh.seek(0, os.SEEK_END)
            if not first:
                fh.write(header)
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
    log.debug("appended %d row(s) to %s", len(records), path)
    return len(records)
