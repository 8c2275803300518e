"""The runner's one client of a ComfyUI server: every endpoint it uses, on one ``requests.Session``.

HTTP: ``/system_stats``, ``/object_info[/<class>]``, ``/prompt``, ``/history/<id>``,
``/view`` (GET, and HEAD to ask whether an input file exists), ``/upload/image``,
``/queue`` (delete) and ``/interrupt``. Websocket: ``/ws?clientId=`` (live events of a
prompt, with ``websocket-client``; without it, or without a websocket, callers poll
``/history``). Failed connections raise ``requests.ConnectionError``/``Timeout``
(both ``OSError``); refused requests raise ``requests.HTTPError``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

log = logging.getLogger("cxr_counterfactual.client")
END_KINDS = ("execution_success", "execution_error", "execution_interrupted")


class PromptError(RuntimeError):
    """The server refused or failed a prompt; ``details`` holds its JSON answer.

    ``prompt_id`` is set when the server queued the prompt anyway (some outputs
    valid, others listed in ``node_errors``), so that the caller can cancel it.
    """

    def __init__(self, message: str, details: Any = None, prompt_id: str = "") -> None:
        super().__init__(message)
        self.details = details
        self.prompt_id = prompt_id


class ComfyClient:
    """One server: ``base_url`` such as ``http://127.0.0.1:8188``. Safe to share between threads."""

    def __init__(self, base_url: str, client_id: str | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout_s = timeout_s
        self._local = threading.local()  # a Session per thread: requests does not promise thread safety

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _call(
        self, method: str, path: str, timeout_s: float | None = None, **kwargs: Any
    ) -> requests.Response:
        r = self.session.request(method, self.base_url + path, timeout=timeout_s or self.timeout_s, **kwargs)
        r.raise_for_status()
        return r

    def get_json(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params or None).json()

    def system_stats(self, timeout_s: float | None = None) -> dict:
        return self._call("GET", "/system_stats", timeout_s).json()

    def alive(self, timeout_s: float = 10.0) -> bool:
        """Whether ``/system_stats`` answers."""
        try:
            self.system_stats(timeout_s)
        except (requests.RequestException, ValueError):
            return False
        return True

    def object_info(self, class_type: str | None = None) -> dict:
        """Every node class's inputs and outputs, or one class's (``{class_type: {...}}``)."""
        return self.get_json("/object_info" + ("/" + quote(class_type, safe="") if class_type else ""))

    def queue_prompt(self, prompt: dict) -> str:
        # json.dumps, not requests' json= (which refuses NaN): the server, not the client, judges the values
        body = json.dumps({"prompt": prompt, "client_id": self.client_id})
        r = self.session.post(self.base_url + "/prompt", data=body, headers={"Content-Type": "application/json"},
                              timeout=self.timeout_s)  # fmt: skip
        if not r.ok:
            details = _json_or_none(r)
            raise PromptError(
                f"/prompt refused the workflow (HTTP {r.status_code}): {_summarise(details)}", details
            )
        details = r.json()
        if details.get("node_errors"):
            # HTTP 200 with node_errors: ComfyUI queued only the outputs that validated; the row is not whole
            raise PromptError(
                f"/prompt accepted only part of the workflow (HTTP 200 with node_errors): {_summarise(details)}",
                details,
                str(details.get("prompt_id") or ""),
            )
        return details["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout_s: float = 600.0, poll_s: float = 0.25) -> dict:
        """Poll ``/history`` until the prompt finished; raise PromptError if it failed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") == "error" or not status.get("completed"):
                    raise PromptError(f"prompt {prompt_id} failed: {_execution_error(status)}", entry)
                return entry
            time.sleep(poll_s)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout_s:.0f}s")

    def run(self, prompt: dict, timeout_s: float = 600.0) -> dict:
        return self.wait(self.queue_prompt(prompt), timeout_s)

    def cancel(self, prompt_id: str) -> None:
        """Take a prompt off the queue, or interrupt it if it is running; a failure is only logged."""
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            try:
                self._call("POST", path, 10.0, json=body)
            except requests.RequestException as e:
                log.debug("could not cancel %s via %s: %s", prompt_id, path, e)

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        params = {"filename": filename, "subfolder": subfolder, "type": folder_type}
        return self._call("GET", "/view", params=params).content

    def input_exists(self, name: str, subfolder: str) -> bool:
        """Whether the input folder holds ``subfolder/name`` (``HEAD /view``)."""
        params = {"filename": name, "subfolder": subfolder, "type": "input"}
        r = self.session.head(self.base_url + "/view", params=params, timeout=self.timeout_s)
        return r.status_code == 200

    def upload(self, path: Path, subfolder: str) -> str:
        """Put one file into the input folder as it is (any bytes); returns 'subfolder/name' as stored.

        ComfyUI's ``/upload/image`` takes a multipart form: ``image`` (the file), ``type``,
        ``subfolder`` and ``overwrite``, and answers ``{"name", "subfolder", "type"}``.
        """
        form = {"type": "input", "subfolder": subfolder, "overwrite": "true"}
        with path.open("rb") as fh:
            r = self.session.post(self.base_url + "/upload/image", data=form, timeout=max(self.timeout_s, 120.0),
                                  files={"image": (path.name, fh, "application/octet-stream")})  # fmt: skip
        if not r.ok:
            raise OSError(f"{self.base_url}/upload/image refused {path} (HTTP {r.status_code})")
        info = r.json()
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def follow(self, submit: Callable[[], str], timeout_s: float,
               on_event: Callable[[str, dict[str, Any]], None] | None = None) -> tuple[str, bool]:  # fmt: skip
        """Connect the websocket, queue the prompt (``submit`` returns its id) and stream its events until it ends.

        Returns (prompt id, whether the websocket was followed). The connection is
        opened before the prompt is queued, so no early message is missed.
        """
        try:
            import websocket  # websocket-client
        except ImportError:
            log.debug("websocket-client is not installed; polling /history instead")
            return submit(), False
        url = self.base_url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
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


def output_images(entry: dict) -> list[dict]:
    """Every image record (filename, subfolder, type) in a history entry's outputs."""
    return [img for node in entry.get("outputs", {}).values() for img in node.get("images", [])]


def _json_or_none(r: requests.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def _summarise(details: Any) -> str:
    if not isinstance(details, dict):
        return str(details)
    parts = [str(details.get("error", {}).get("message", ""))]
    for node_id, err in (details.get("node_errors") or {}).items():
        for e in err.get("errors", []):
            parts.append(
                f"node {node_id} ({err.get('class_type')}): {e.get('message')} {e.get('details', '')}"
            )
    return "; ".join(p for p in parts if p)


def _execution_error(status: dict) -> str:
    for kind, msg in status.get("messages", []):
        if kind == "execution_error":
            return f"{msg.get('node_type')} (node {msg.get('node_id')}): {msg.get('exception_message', '').strip()}"
    return json.dumps(status)[:500]
