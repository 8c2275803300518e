"""Live progress of a run: a ``tqdm`` bar of rows, its text fed by ComfyUI's websocket events.

Events used (``ComfyClient.follow`` delivers them): ``execution_cached`` (nodes
reused from the cache), ``executing`` (the running node), ``executed``,
``progress`` (sampler steps) and ``execution_error``. The bar is drawn only on a
terminal; log messages go through tqdm, so they never tear the bar's line.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


class ProgressBar:
    """Rows done out of the total, plus the latest node and step of any worker; thread-safe."""

    def __init__(self, total_rows: int, show: bool | None = None, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        self.show = stream.isatty() if show is None else show
        self.failed = 0
        self._lock = threading.Lock()
        self._bar = tqdm(total=total_rows, unit="row", file=stream, disable=not self.show, mininterval=0.1,
                         dynamic_ncols=True, bar_format="{l_bar}{bar:24}| {n_fmt}/{total_fmt} rows{postfix}")  # fmt: skip

    def step(self, detail: str) -> None:
        with self._lock:
            self._bar.set_postfix_str(self._text(detail))

    def row_done(self, ok: bool) -> None:
        with self._lock:
            self.failed += 0 if ok else 1
            self._bar.set_postfix_str(self._text(""), refresh=False)
            self._bar.update(1)

    @contextlib.contextmanager
    def logging(self) -> Iterator[None]:
        """Log records written above the bar (while it is shown) instead of across it."""
        if not self.show:
            yield
            return
        with logging_redirect_tqdm():
            yield

    def close(self) -> None:
        with self._lock:
            self._bar.close()

    def _text(self, detail: str) -> str:
        failed = f"{self.failed} failed" if self.failed else ""
        return ", ".join(t for t in (failed, detail) if t)


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
