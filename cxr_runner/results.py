"""Result records of a run folder: ``results.jsonl`` (every outcome) and ``results.csv`` (one line per image).

``results.jsonl`` is the state that makes runs resumable: one JSON record per
finished row attempt series, appended under an exclusive file lock
(``results.jsonl.lock``, cxr_core/metrics/locking.py), so several
processes (shards, array tasks) may share one folder; a line torn by a
killed process is skipped on reading and closed off before the next record.
``results.csv`` is rewritten from it (under the same lock, atomically) at the
end of each run: the latest record of
every row, one line per metrics record (image) of that row, nested metrics
flattened to ``metric.<name>`` / ``metric.<group>.<name>`` columns.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from .shared import locking

log = logging.getLogger("cxr_counterfactual.runner")
BASE_COLUMNS = ("run_id", "row_index", "row_key", "status", "attempts", "prompt_id", "server", "error",
                "finished_utc", "outputs", "metrics_node", "image_index")  # fmt: skip


class ResultStore:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.jsonl = out_dir / "results.jsonl"
        self.csv = out_dir / "results.csv"

    def records(self) -> list[dict[str, Any]]:
        if not self.jsonl.is_file():
            return []
        out = []
        with self.jsonl.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a killed process
        return out

    def latest(self) -> dict[str, dict[str, Any]]:
        """{row key: its latest record}; an ``ok`` record is never replaced by a later failure."""
        latest: dict[str, dict[str, Any]] = {}
        for rec in self.records():
            if rec.get("status") == "ok" or latest.get(rec["row_key"], {}).get("status") != "ok":
                latest[rec["row_key"]] = rec
        return latest

    def finished(self) -> set[str]:
        return {k for k, r in self.latest().items() if r.get("status") == "ok"}

    def append(self, record: dict[str, Any]) -> None:
        """Append one record under the folder's lock; a line left unfinished by a killed writer is ended first."""
        line = json.dumps(record, default=str) + "\n"  # key order kept: manifest columns stay in order
        with self.locked(), self.jsonl.open("a+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    log.warning(
                        "%s ended in a torn line (a killed writer); it is closed off and ignored", self.jsonl
                    )
                    line = "\n" + line
            fh.seek(0, os.SEEK_END)
            fh.write(line.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())

    def write_csv(self) -> Path:
        """Rewrite results.csv from the records, read and written under the folder's lock.

        Holding the lock from reading results.jsonl to the rename means that a
        shard finishing later never replaces a newer table with one built from
        an older snapshot; the rename means readers never see half a file.
        """
        with self.locked():
            recs = sorted(self.latest().values(), key=lambda r: (r.get("row_index", 0), r.get("row_key", "")))
            lines = [line for r in recs for line in csv_lines(r)]
            columns = list(BASE_COLUMNS)
            for line in lines:
                columns.extend(c for c in line if c not in columns)
            buf = io.StringIO(newline="")
            writer = csv.DictWriter(buf, fieldnames=columns)
            writer.writeheader()
            writer.writerows(lines)
            locking.atomic_write_bytes(self.csv, buf.getvalue().encode("utf-8"))
        return self.csv

    def locked(self) -> AbstractContextManager[None]:
        """The folder's exclusive lock: every process (shard) and thread appending to or tabulating it."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return locking.exclusive_lock(self.jsonl, timeout_s=600.0)


def csv_lines(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """One CSV line per metrics record of a result record (one line if it has none)."""
    base = {k: rec.get(k) for k in BASE_COLUMNS if k not in ("outputs", "metrics_node", "image_index")}
    base["outputs"] = ";".join(rec.get("outputs") or [])
    base.update({f"row.{k}": v for k, v in (rec.get("row") or {}).items()})
    metrics = rec.get("metrics") or []
    if not metrics:
        return [base]
    lines = []
    for position, m in enumerate(metrics):
        line = dict(
            base, metrics_node=m.get("node", ""), image_index=m.get("record", {}).get("image_index", position)
        )
        line.update({f"metric.{k}": v for k, v in flatten(m.get("record", {})).items()})
        lines.append(line)
    return lines


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists as JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out[prefix + k] = json.dumps(v)
        else:
            out[prefix + k] = v
    return out


def read_results_csv(path: Path) -> list[dict[str, str]]:
    """The lines of a results.csv (or of a folder holding one)."""
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path} (expected a results.csv or a folder holding one)")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
