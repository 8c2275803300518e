"""Live progress from ComfyUI's websocket (``/ws?clientId=``), drawn as one line on stderr.

Messages used: ``execution_start``, ``execution_cached`` (nodes reused from the
cache), ``executing`` (``node`` null: the prompt is done), ``progress`` (sampler
steps), ``execution_success``, ``execution_error`` and
``execution_interrupted``. Without ``websocket-client`` or without a websocket
the follower only submits; the caller's ``/history`` polling gives the outcome
either way. The bar is drawn only on a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

log = logging.getLogger("cxr_counterfactual.runner")
END_KINDS = ("execution_success", "execution_error", "execution_interrupted")


class ProgressBar:
    """Rows done out of the total, plus the latest node and step of any worker; one line, thread-safe."""

    def __init__(self, total_rows: int, show: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.show = self.stream.isatty() if show is None else show
        self.total, self.done, self.failed = total_rows, 0, 0
        self.detail = ""
        self._lock = threading.Lock()
        self._last = 0.0

    def step(self, detail: str) -> None:
        with self._lock:
            self.detail = detail
            self._draw(force=False)

    def row_done(self, ok: bool) -> None:
        with self._lock:
            self.done += 1
            self.failed += 0 if ok else 1
            self.detail = ""
            self._draw(force=True)

    def clear_line(self) -> None:
        """Blank the bar's line so that a log message starts at column 0."""
        with self._lock:
            if self.show and self._last:
                self.stream.write("\r" + " " * 80 + "\r")
                self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self.show and self._last:
                self.stream.write("\n")
                self.stream.flush()

    def line(self, width: int = 24) -> str:
        filled = int(width * self.done / max(self.total, 1))
        failed = f", {self.failed} failed" if self.failed else ""
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} rows{failed} {self.detail}"

    def _draw(self, force: bool) -> None:
        now = time.monotonic()
        if not self.show or (not force and now - self._last < 0.1):
            return
        self._last = now
        self.stream.write("\r" + self.line()[:150].ljust(80))
        self.stream.flush()


def follow_prompt(
    base_url: str,
    client_id: str,
    submit: Callable[[], str],
    timeout_s: float,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> tuple[str, bool]:
    """Connect the websocket, queue the prompt (``submit`` returns its id) and stream its events until it ends.

    Returns (prompt id, whether the websocket was followed). The connection is
    opened before the prompt is queued, so no early message is missed.
    """
    try:
        import websocket  # websocket-client
    except ImportError:
        log.debug("websocket-client is not installed; polling /history instead")
        return submit(), False
    url = (
        base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + f"/ws?clientId={client_id}"
    )
    try:
        ws = websocket.create_connection(url, timeout=5)
    except (OSError, websocket.WebSocketException) as e:
        log.debug("no websocket at %s (%s); polling /history instead", url, e)
        return submit(), False
    try:
        prompt_id = submit()
    except BaseException:
        ws.close()
        raise
    try:
        _stream(ws, websocket, prompt_id, timeout_s, on_event or (lambda kind, data: None))
    except (OSError, websocket.WebSocketException) as e:
        log.debug("websocket closed early (%s); polling /history instead", e)
    finally:
        ws.close()
    return prompt_id, True


def _stream(ws: Any, websocket: Any, prompt_id: str, timeout_s: float,
            on_event: Callable[[str, dict[str, Any]], None]) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            raw = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        if not isinstance(raw, str):
            continue  # binary preview frames
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        data = msg.get("data") or {}
        if data.get("prompt_id") != prompt_id:
            continue  # queue status broadcasts and other prompts
        kind = msg.get("type", "")
        on_event(kind, data)
        if kind in END_KINDS or (kind == "executing" and data.get("node") is None):
            return


class PromptEvents:
    """Turns one prompt's websocket events into progress text: nodes run or cached, the running node's steps."""

    def __init__(self, api: dict, bar: ProgressBar, label: str) -> None:
        self.titles = {
            nid: n.get("_meta", {}).get("title") or n.get("class_type", nid) for nid, n in api.items()
        }
        self.total = len(api)
        self.finished: set[str] = set()
        self.running: str | None = None
        self.bar, self.label = bar, label

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        node = data.get("node") or data.get("node_id")
        if kind == "execution_cached":
            self.finished.update(str(n) for n in data.get("nodes") or [])
        elif kind in ("executing", "executed") and self.running is not None and self.running != node:
            self.finished.add(self.running)  # ComfyUI runs one node at a time: the previous one is done
        if kind == "executed" and node is not None:
            self.finished.add(str(node))
        if kind == "executing":
            self.running = None if node is None else str(node)
        if kind == "execution_error":
            self.bar.step(f"{self.label}: error in {self.titles.get(str(node), node)}")
            return
        if kind not in ("executing", "progress") or node is None:
            return
        steps = f" {data['value']}/{data['max']}" if kind == "progress" else ""
        done = min(len(self.finished), self.total)
        self.bar.step(f"{self.label}: node {done}/{self.total} {self.titles.get(str(node), node)}{steps}")
