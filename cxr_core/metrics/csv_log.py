"""The metrics CSV: the registry's columns (registry.py); one row per image; the header written once.

Rows are appended under an exclusive file lock (``locking.exclusive_lock``), so
concurrent prompts never interleave or duplicate the header. A file from an
earlier version (its columns a subset of ``CSV_COLUMNS``) gains the new columns,
empty in its old rows; a file with other columns (another tool) is refused
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

from .locking import atomic_write_bytes, exclusive_lock
from .registry import METRICS, VALIDITY_FIELDS

log = logging.getLogger("cxr_counterfactual.metrics.csv_log")

RUN_COLUMNS = ("timestamp_utc", "run_tag", "image_index", "batch_size", "height", "width")
CSV_COLUMNS: tuple[str, ...] = (*RUN_COLUMNS, *(c for m in METRICS for c in m.csv_columns()), "notes")


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
    row = {c: _cell(rec.get(c)) for c in RUN_COLUMNS}
    row["timestamp_utc"] = timestamp or datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    for m in METRICS:
        value = rec.get(m.name)
        if m.kind == "per_organ":
            row[m.name] = ";".join(f"{k}={_cell(v)}" for k, v in (value or {}).items())
        elif m.kind == "validity":
            v = value or {}
            row.update({f"{m.name}_{f}": _cell(v.get(f)) for f in VALIDITY_FIELDS})
            row[f"{m.name}_status"] = "ok" if v.get("available") else f"unavailable: {v.get('reason', '')}"
        else:
            row[m.name] = "inf" if m.infinite_flag and rec.get(m.infinite_flag) else _cell(value)
    row["notes"] = " | ".join(f"{k}: {r}" for k, r in (rec.get("null_reasons") or {}).items())
    return row


def _header_line(columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue()


def append_records(path: Path, records: list[dict[str, Any]]) -> int:
    """Append one row per record to ``path`` under an exclusive lock; returns the rows written.

    A file written by an earlier version (its columns a subset of ``CSV_COLUMNS``, e.g.
    before a metric was added) is first rewritten with the full header, its rows kept
    and the new columns empty; a file with columns this version does not write is refused.
    """
    timestamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    for rec in records:
        writer.writerow(record_to_row(rec, timestamp))
    with exclusive_lock(path):
        with open(path, "a+", encoding="utf-8", newline="") as fh:
            fh.seek(0)
            first = fh.readline()
        if first and first != _header_line():
            _upgrade(path, first)
        with open(path, "a", encoding="utf-8", newline="") as fh:
            if not first:
                fh.write(_header_line())
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
    log.debug("appended %d row(s) to %s", len(records), path)
    return len(records)


def _upgrade(path: Path, first: str) -> None:
    """Rewrite an older file with this version's header (called under the file's lock)."""
    old = next(csv.reader([first]))
    unknown = [c for c in old if c not in CSV_COLUMNS]
    if unknown or len(set(old)) != len(old):
        raise ValueError(
            f"csv_name: {path} exists with different columns ({', '.join(unknown) or 'a repeated column'} not "
            f"written by this version; first line {first.strip()[:120]!r}); expected the header "
            f"{_header_line().strip()!r} or a subset of it. Choose a new csv_name for this version's rows"
        )
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    log.info("%s: columns %s added to the header of earlier rows (left empty)", path,
             ", ".join(c for c in CSV_COLUMNS if c not in old))  # fmt: skip
