"""Run a workflow over rows: one worker per server, resume, retries, downloads and metrics.

Each row becomes one prompt. Rows whose key already finished ``ok`` in the
out folder are skipped; the others are queued across the servers (one worker
thread each, pulling from one queue, so fast servers take more rows). A row
is tried ``retries + 1`` times, then recorded as failed with the server's
message, and the run goes on. A server that stops answering hands its row
back to the others and its worker stops.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from .client import ComfyClient, PromptError
from .errors import RunnerError
from .manifest import FILE_COLUMNS, Mapping, row_key, row_overrides, shard_rows
from .outputs import IncompleteOutputs, OutputClasses, check_outputs, output_nodes
from .overrides import Override, Target, apply_overrides, check_target, parse_value
from .progress import ProgressBar, PromptEvents
from .results import ResultStore
from .uploads import Uploader, file_digest, local_file
from .workflow_format import WorkflowFormatError

log = logging.getLogger("cxr_counterfactual.runner")
ATTEMPT_ERRORS = (PromptError, IncompleteOutputs, TimeoutError, OSError, ValueError, KeyError)


@dataclass
class Job:
    workflow: dict  # API format
    out_dir: Path
    servers: list[str]
    mapping: Mapping = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    file_overrides: list[tuple[Target, Path]] = field(default_factory=list)  # local files uploaded, then set
    retries: int = 1
    retry_delay_s: float = 2.0
    timeout_s: float = 1800.0
    shard: tuple[int, int] = (0, 1)
    resume: bool = True  # skip rows already ok in out_dir
    show_progress: bool | None = None  # None: on a terminal only
    base_dirs: list[Path] = field(default_factory=lambda: [Path.cwd()])  # for relative file cells
    file_columns: tuple[str, ...] = FILE_COLUMNS
    previews: bool = False  # also fetch temp (preview) images
    label: str = ""


@dataclass
class Report:
    run_id: str
    out_dir: Path
    counts: dict[str, int]

    @property
    def failed(self) -> int:
        return self.counts["failed"] + self.counts["not_run"]

    def summary(self) -> str:
        parts = [f"{v} {k.replace('_', ' ')}" for k, v in self.counts.items() if v or k in ("ok", "failed")]
        return ", ".join(parts)


class ServerDown(RuntimeError):
    pass


@dataclass
class _Row:
    index: int
    row: dict[str, str]
    key: str
    files: dict[str, tuple[Path, str]]  # column -> (local file, content digest)


def check_servers(urls: list[str], timeout_s: float = 10.0) -> None:
    """Every URL answers ``/system_stats``; else one error naming each that does not."""
    bad = []
    for url in urls:
        try:
            ComfyClient(url).system_stats(timeout_s)
        except (requests.RequestException, ValueError) as e:
            bad.append(f"{url} ({type(e).__name__})")
    if bad:
        raise RunnerError(
            f"cannot reach ComfyUI at {', '.join(bad)}; expected a running server (python main.py --listen "
            "127.0.0.1 --port 8188), or use --start-server --comfyui-dir DIR"
        )


def check_job(job: Job) -> None:
    """Every mapped and overridden input exists in the workflow (before anything is queued)."""
    targets = [t for ts in job.mapping.values() for t in ts] + [o.target for o in job.overrides]
    targets += [t for t, _ in job.file_overrides]
    for t in targets:
        try:
            check_target(job.workflow, t)
        except WorkflowFormatError as e:
            raise RunnerError(f"{job.label + ': ' if job.label else ''}{e}") from e


def run_job(job: Job, rows: list[dict[str, str]]) -> Report:
    """Run the shard's unfinished rows across the servers; results go to ``job.out_dir``."""
    check_job(job)
    store = ResultStore(job.out_dir)
    done = store.finished() if job.resume else set()
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    counts = dict.fromkeys(("ok", "failed", "skipped", "duplicate", "not_run"), 0)
    todo: queue.Queue[_Row] = queue.Queue()
    seen: set[str] = set()
    for item in _prepare(job, rows):
        if item.key in done:
            counts["skipped"] += 1
        elif item.key in seen:
            counts["duplicate"] += 1
            log.warning("row %d repeats an earlier row of this run (same cells); run once", item.index)
        else:
            seen.add(item.key)
            todo.put(item)
    if counts["skipped"]:
        log.info("%s%d rows already done in %s: skipped", _prefix(job), counts["skipped"], job.out_dir)
    bar = ProgressBar(todo.qsize(), job.show_progress)
    state = {"live": len(job.servers)}
    lock = threading.Lock()

    def worker(url: str) -> None:
        client = ComfyClient(url, timeout_s=60.0)
        uploader = Uploader(client)
        classes = OutputClasses(client)
        while True:
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                rec = _run_row(job, client, uploader, classes, item, run_id, bar)
            except ServerDown as e:
                with lock:
                    state["live"] -= 1
                    others = state["live"] > 0
                log.error("%s stopped answering (%s); %s", url, e, "its rows go to the other servers" if others
                          else "no server left")  # fmt: skip
                todo.put(item)
                return
            except Exception as e:  # a row never takes the run down
                log.exception("row %d: unexpected error", item.index)
                rec = _record(
                    job, item, run_id, url, status="failed", attempts=1, error=f"{type(e).__name__}: {e}"
                )
            store.append(rec)
            with lock:
                counts[rec["status"]] += 1
            if rec["status"] == "failed":
                log.warning("%srow %d failed after %d attempts: %s", _prefix(job), item.index, rec["attempts"],
                            rec["error"])  # fmt: skip
            elif not bar.show:
                log.info("%srow %d ok: %d files, prompt %s", _prefix(job), item.index, len(rec["outputs"]),
                         rec["prompt_id"])  # fmt: skip
            bar.row_done(rec["status"] == "ok")

    threads = [
        threading.Thread(target=worker, args=(u,), name=f"cxr-runner-{u}", daemon=True) for u in job.servers
    ]
    try:
        with bar.logging():
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        bar.close()
        counts["not_run"] = todo.qsize()
        store.write_csv()
    return Report(run_id, job.out_dir, counts)


def _prepare(job: Job, rows: list[dict[str, str]]) -> list[_Row]:
    recipe: dict[str, Any] = {
        "workflow": job.workflow,
        "set": [[str(o.target), o.value] for o in job.overrides],
        "files": [[str(t), file_digest(p)] for t, p in job.file_overrides],
        "map": {c: [str(t) for t in ts] for c, ts in job.mapping.items()},
    }
    items = []
    for index, row in shard_rows(rows, job.shard):
        files = {}
        for column in job.mapping:
            path = local_file(row[column], job.base_dirs) if column in job.file_columns else None
            if path is not None:
                files[column] = (path, file_digest(path))
        digests = {c: d for c, (_, d) in files.items()}
        items.append(_Row(index, row, row_key(row, {**recipe, "row_files": digests}), files))
    return items


def _run_row(job: Job, client: ComfyClient, uploader: Uploader, classes: OutputClasses, item: _Row, run_id: str,
             bar: ProgressBar) -> dict:  # fmt: skip
    error, prompt_id = "", ""
    for attempt in range(1, job.retries + 2):
        try:
            values = {c: uploader.input_name(*item.files[c]) if c in item.files else parse_value(item.row[c])
                      for c in job.mapping}  # fmt: skip
            uploaded = [Override(t, uploader.input_name(path)) for t, path in job.file_overrides]
            api = apply_overrides(
                job.workflow, [*job.overrides, *uploaded, *row_overrides(item.row, job.mapping, values)]
            )
            events = PromptEvents(api, bar, f"{_prefix(job)}row {item.index}")
            deadline = time.monotonic() + job.timeout_s
            prompt_id = ""
            prompt_id, _ = client.follow(lambda api=api: client.queue_prompt(api), job.timeout_s, events)
            entry = _wait(client, prompt_id, deadline, job.timeout_s)
            check_outputs(api, entry, output_nodes(api, classes.is_output), prompt_id)
            rec = _record(
                job, item, run_id, client.base_url, status="ok", attempts=attempt, prompt_id=prompt_id
            )
            rec["outputs"], rec["output_titles"] = _download(
                client, api, entry, job.out_dir, item.key, job.previews
            )
            rec["metrics"] = collect_metrics(entry)
            return rec
        except ATTEMPT_ERRORS as e:
            if isinstance(e, PromptError) and e.prompt_id:
                # queued in part (the rest in node_errors): take it off the queue
                prompt_id = e.prompt_id
                client.cancel(prompt_id)
            if (
                isinstance(e, (requests.ConnectionError, requests.Timeout, ConnectionError))
                and not client.alive()
            ):
                raise ServerDown(str(e)) from e
            error = str(e) or type(e).__name__
            log.debug("row %d attempt %d failed: %s", item.index, attempt, error)
            if attempt <= job.retries:
                time.sleep(job.retry_delay_s)
    return _record(job, item, run_id, client.base_url, status="failed", attempts=job.retries + 1,
                   prompt_id=prompt_id, error=error[:4000])  # fmt: skip


def _record(job: Job, item: _Row, run_id: str, server: str, **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"run_id": run_id, "row_index": item.index, "row_key": item.key, "row": item.row,
                           "server": server, "prompt_id": "", "error": "", "outputs": [], "metrics": [],
                           "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    rec.update(fields)
    return rec


def _wait(client: ComfyClient, prompt_id: str, deadline: float, timeout_s: float) -> dict:
    """The finished history entry; past the deadline the prompt is cancelled and TimeoutError raised."""
    try:
        return client.wait(prompt_id, max(deadline - time.monotonic(), 0.5))
    except TimeoutError:
        client.cancel(prompt_id)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout_s:g}s; cancelled") from None


def _download(client: ComfyClient, api: dict, entry: dict, out_dir: Path, key: str,
              previews: bool) -> tuple[list[str], dict[str, str]]:  # fmt: skip
    """Fetch the prompt's images into ``out_dir/key/<subfolder>/``.

    Returns their paths relative to ``out_dir`` and {path: title of the node that saved it, "" if untitled}
    (the picture report finds the counterfactual, prior and difference map by these titles).
    """
    saved, titles = [], {}
    kinds = ("output", "temp") if previews else ("output",)
    for nid, node in entry.get("outputs", {}).items():
        for img in node.get("images") or []:
            if not isinstance(img, dict) or img.get("type") not in kinds:
                continue
            sub = PurePosixPath(img.get("subfolder") or "")
            parts = [p for p in sub.parts if p not in ("", ".", "..", "/")]
            rel = Path(key, *parts, Path(img["filename"]).name)
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (out_dir / rel).write_bytes(client.view(img["filename"], img.get("subfolder", ""), img["type"]))
            saved.append(rel.as_posix())
            titles[rel.as_posix()] = str((api.get(nid, {}).get("_meta") or {}).get("title") or "")
    return saved, titles


def collect_metrics(entry: dict) -> list[dict[str, Any]]:
    """Every ``cxr_metrics`` record in a history entry's outputs, as {"node": id, "record": {...}}."""
    found = []
    for nid, node in sorted(entry.get("outputs", {}).items(), key=lambda kv: _id_order(kv[0])):
        for rec in node.get("cxr_metrics") or []:
            if isinstance(rec, dict):
                found.append({"node": nid, "record": rec})
    return found


def _id_order(nid: str) -> tuple[int, str]:
    return (int(nid), "") if nid.isdigit() else (1 << 30, nid)


def _prefix(job: Job) -> str:
    return f"[{job.label}] " if job.label else ""
