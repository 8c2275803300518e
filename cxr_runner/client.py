"""A small HTTP client for ComfyUI's queue API (``/prompt``, ``/history``, ``/view``)."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

log = logging.getLogger("cxr_counterfactual.client")


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
    def __init__(self, base_url: str, client_id: str | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout_s = timeout_s

    def _request(self, path: str, data: dict | None = None, method: str | None = None) -> bytes:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.base_url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
            return r.read()

    def get_json(self, path: str) -> Any:
        return json.loads(self._request(path))

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def queue_prompt(self, prompt: dict) -> str:
        try:
            raw = self._request("/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as e:
            details = _read_error(e)
            raise PromptError(
                f"/prompt refused the workflow (HTTP {e.code}): {_summarise(details)}", details
            ) from e
        answer = json.loads(raw)
        if answer.get("node_errors"):
            # HTTP 200 with node_errors: ComfyUI queued only the outputs that validated; the row is not whole
            raise PromptError(
                f"/prompt accepted only part of the workflow (HTTP 200 with node_errors): {_summarise(answer)}",
                answer,
                str(answer.get("prompt_id") or ""),
            )
        return answer["prompt_id"]

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

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        return self._request(f"/view?{q}")

    def interrupt(self) -> None:
        self._request("/interrupt", {})


def output_images(entry: dict) -> list[dict]:
    """Every image record (filename, subfolder, type) in a history entry's outputs."""
    return [img for node in entry.get("outputs", {}).values() for img in node.get("images", [])]


def _read_error(e: urllib.error.HTTPError) -> Any:
    try:
        return json.loads(e.read())
    except (ValueError, OSError):
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
