"""Run a workflow over a dataset manifest: resumable, idempotent, sharded, across several servers.

Each manifest row becomes one prompt: its columns are written into workflow
inputs through a mapping (column -> "Node title.input"). Local files named in
the row are uploaded to the server's input folder first. Results go to
``<out>/results.jsonl`` (one record per attempt outcome, appended under a file
lock, so shards may share an out folder) and ``<out>/results.csv`` (the latest
record per row, flattened metrics). A row whose key (hash of the row and the
workflow) already finished ``ok`` is skipped; failed rows are retried on the
next run. ``--shard i/n`` keeps the rows whose index % n == i.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import ComfyClient, PromptError, output_images
from .overrides import apply_overrides, parse_target, parse_value
from .progress import submit_and_follow

log = logging.getLogger("cxr_counterfactual.runner")
FILE_COLUMNS = ("image", "masks")


class ManifestError(ValueError):
    pass


@dataclass
class ManifestJob:
    workflow: dict
    out_dir: Path
    servers: list[str]
    mapping: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (title, input)
    overrides: list[tuple[str, str, Any]] = field(default_factory=list)
    retries: int = 1
    timeout_s: float = 1800.0
    shard: tuple[int, int] = (0, 1)
    show_progress: bool | None = None


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise ManifestError(f"--shard '{text}': expected i/n such as 0/4") from e
    if n < 1 or not 0 <= i < n:
        raise ManifestError(f"--shard '{text}': need 0 <= i < n")
    return i, n


def parse_mapping(items: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ManifestError(f"--map '{item}': expected column=Node title.input")
        column, target = item.split("=", 1)
        out[column.strip()] = parse_target(target)
    return out


def read_manifest(path: Path, mapping: dict[str, tuple[str, str]]) -> list[dict[str, str]]:
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [dict(r) for r in reader]
        columns = reader.fieldnames or []
    missing = sorted(set(mapping) - set(columns))
    if missing:
        raise ManifestError(f"manifest {path.name}: mapped columns {missing} are not in its header {columns}")
    return rows


def row_key(row: dict, workflow: dict) -> str:
    blob = json.dumps({"row": row, "workflow": workflow}, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def shard_rows(rows: list[dict], shard: tuple[int, int]) -> list[tuple[int, dict]]:
    i, n = shard
    return [(k, r) for k, r in enumerate(rows) if k % n == i]


class ResultStore:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = out_dir / "results.jsonl"
        self._lock = threading.Lock()

    def records(self) -> list[dict]:
        if not self.jsonl.is_file():
            return []
        with self.jsonl.open() as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def latest(self) -> dict[str, dict]:
        latest: dict[str, dict] = {}
        for rec in self.records():
            if rec["status"] == "ok" or latest.get(rec["key"], {}).get("status") != "ok":
                latest[rec["key"]] = rec
        return latest

    def finished(self) -> set[str]:
        return {k for k, r in self.latest().items() if r["status"] == "ok"}

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock, self.jsonl.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.write(line)
                fh.flush()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def write_csv(self) -> Path:
        path = self.out_dir / "results.csv"
        rows = [flatten_record(r) for r in sorted(self.latest().values(), key=lambda r: r.get("index", 0))]
        columns: list[str] = []
        for r in rows:
            columns.extend(c for c in r if c not in columns)
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
        return path


def flatten_record(rec: dict) -> dict[str, Any]:
    flat: dict[str, Any] = {k: rec.get(k) for k in ("key", "index", "status", "attempts", "prompt_id", "server",
                                                     "error")}  # fmt: skip
    flat.update({f"row.{k}": v for k, v in (rec.get("row") or {}).items()})
    flat["outputs"] = ";".join(rec.get("outputs") or [])
    for i, m in enumerate(rec.get("metrics") or []):
        prefix = "metric." if i == 0 else f"metric{i}."
        for k, v in _flatten(m).items():
            flat[prefix + k] = v
    return flat


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out[prefix + k] = json.dumps(v)
        else:
            out[prefix + k] = v
    return out


def upload(client: ComfyClient, path: Path, subfolder: str) -> str:
    """POST a local file to /upload/image; returns the name to use in the workflow."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (("subfolder", subfolder), ("overwrite", "true"), ("type", "input")):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")  # fmt: skip
    parts.append(f"--{boundary}--\r\n".encode())
    req = urllib.request.Request(client.base_url + "/upload/image", data=b"".join(parts), method="POST")
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    with urllib.request.urlopen(req, timeout=client.timeout_s) as r:
        info = json.loads(r.read())
    return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]


def _row_value(client: ComfyClient, column: str, cell: str, key: str) -> Any:
    path = Path(cell).expanduser()
    if column in FILE_COLUMNS and cell and path.is_file():
        name = upload(client, path, f"cxr_runner/{key}")
        sidecar = path.with_suffix(".json")  # a label map's legend travels with it
        if sidecar.is_file():
            upload(client, sidecar, f"cxr_runner/{key}")
        return name
    return parse_value(cell)


def run_row(client: ComfyClient, job: ManifestJob, index: int, row: dict, key: str) -> dict:
    """Queue one row (with retries) and return its result record."""
    record: dict[str, Any] = {"key": key, "index": index, "row": row, "server": client.base_url}
    error = ""
    for attempt in range(1, job.retries + 2):
        record["attempts"] = attempt
        try:
            sets = list(job.overrides)
            for column, (title, name) in job.mapping.items():
                sets.append((title, name, _row_value(client, column, row[column], key)))
            api = apply_overrides(job.workflow, sets)
            prompt_id = submit_and_follow(client.base_url, client.client_id, lambda a=api: client.queue_prompt(a),
                                          job.timeout_s, job.show_progress)  # fmt: skip
            entry = client.wait(prompt_id, job.timeout_s)
            record.update(status="ok", prompt_id=prompt_id, error="", finished=time.time())
            record["outputs"] = _download(client, entry, job.out_dir / key)
            record["metrics"] = [
                m for out in entry.get("outputs", {}).values() for m in out.get("cxr_metrics", [])
            ]
            return record
        except (PromptError, urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
            error = str(e)
            log.warning("row %d (%s) attempt %d failed: %s", index, key, attempt, error)
    record.update(status="failed", error=error[:2000], finished=time.time())
    return record


def _download(client: ComfyClient, entry: dict, dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    saved = []
    for img in output_images(entry):
        if img.get("type") != "output":
            continue
        path = dest / img["filename"]
        path.write_bytes(client.view(img["filename"], img.get("subfolder", ""), img["type"]))
        saved.append(str(path))
    return saved


def run_manifest(job: ManifestJob, rows: list[dict]) -> dict[str, int]:
    """Run the shard's unfinished rows across the servers; returns counts."""
    store = ResultStore(job.out_dir)
    done = store.finished()
    todo: queue.Queue = queue.Queue()
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    for index, row in shard_rows(rows, job.shard):
        key = row_key(row, {"workflow": job.workflow, "set": job.overrides, "map": job.mapping})
        if key in done:
            counts["skipped"] += 1
        else:
            todo.put((index, row, key))
    lock = threading.Lock()

    def worker(url: str) -> None:
        client = ComfyClient(url)
        while True:
            try:
                index, row, key = todo.get_nowait()
            except queue.Empty:
                return
            rec = run_row(client, job, index, row, key)
            store.append(rec)
            with lock:
                counts[rec["status"]] += 1
            log.info("row %d: %s%s", index, rec["status"], f" ({rec['error']})" if rec["error"] else "")

    threads = [threading.Thread(target=worker, args=(url,), daemon=True) for url in job.servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.write_csv()
    return counts
