"""Follow a queued prompt over the websocket, with a progress bar on stderr (polling as fallback)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger("cxr_counterfactual.runner")


def _bar(value: int, maximum: int, node: str | None, width: int = 28) -> str:
    done = int(width * value / max(maximum, 1))
    return f"\r[{'#' * done}{'.' * (width - done)}] {value}/{maximum} node {node or '-'}  "


def submit_and_follow(base_url: str, client_id: str, submit: Callable[[], str], timeout_s: float,
                      show: bool | None = None, write: Callable[[str], object] = sys.stderr.write) -> str:  # fmt: skip
    """Open the websocket, queue the prompt (``submit`` returns its id), stream progress until it ends.

    Returns the prompt id. Without a websocket it only submits; the caller's
    /history polling (ComfyClient.wait) then gives the outcome either way.
    """
    show = sys.stderr.isatty() if show is None else show
    try:
        import websocket  # websocket-client
    except ImportError:
        log.info("websocket-client is not installed; no live progress")
        return submit()
    url = base_url.replace("http://", "ws://").replace("https://", "wss://") + f"/ws?clientId={client_id}"
    try:
        ws = websocket.create_connection(url, timeout=10)
    except (OSError, websocket.WebSocketException) as e:
        log.info("no websocket (%s); falling back to polling", e)
        return submit()
    try:
        prompt_id = submit()
    except BaseException:
        ws.close()
        raise
    _stream(ws, websocket, prompt_id, timeout_s, show, write)
    return prompt_id


def _stream(ws, websocket, prompt_id: str, timeout_s: float, show: bool, write) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if not isinstance(raw, str):
                continue  # binary preview frames
            msg = json.loads(raw)
            data = msg.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            kind = msg.get("type")
            if kind == "progress" and show:
                write(_bar(int(data.get("value", 0)), int(data.get("max", 1)), data.get("node")))
            elif kind in ("execution_error", "execution_interrupted"):
                return
            elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return
            elif kind == "execution_success" and data.get("prompt_id") == prompt_id:
                return
    finally:
        if show:
            write("\n")
        ws.close()
