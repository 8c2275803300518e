"""Read a workflow file: API format as is, editor (UI) format converted only where that is exact.

The queue runs API format (``{id: {"class_type", "inputs", "_meta"}}``). An
editor workflow (``nodes`` + ``links``) is converted with the server's
``/object_info`` by :func:`workflow_format.ui_to_api`, which handles plain
nodes, bypassed and muted nodes, and notes. Graphs that need the editor's own
logic (subgraphs, group nodes, primitive or reroute nodes feeding inputs) are
refused with the advice to export the API format instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .workflow_format import FRONTEND_ONLY, WorkflowFormatError, is_link, ui_to_api

log = logging.getLogger("cxr_counterfactual.runner")

EXPORT_ADVICE = (
    "open it in ComfyUI and save it with Workflow > Export (API) (enable the dev mode options in older "
    "front ends), then pass that file"
)


def read_workflow(path: Path) -> dict:
    """The workflow JSON as saved (API or UI format); clear errors for a missing or malformed file."""
    if not path.is_file():
        raise WorkflowFormatError(f"workflow file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise WorkflowFormatError(f"workflow file {path} is not JSON: {e}") from e
    if is_ui_format(data) or is_api_format(data):
        return data
    raise WorkflowFormatError(
        f"workflow file {path}: expected ComfyUI's API format ({{node id: {{class_type, inputs}}}}) or an editor "
        f"workflow (nodes and links); found a JSON {type(data).__name__} with keys {sorted(data)[:8] if isinstance(data, dict) else '-'}"
    )


def is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def is_api_format(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(n, dict) and "class_type" in n and "inputs" in n for n in data.values())
    )


def to_api(data: dict, object_info: dict | None, name: str = "workflow") -> dict:
    """API format for ``data``: returned as is when it already is, converted when it is a plain UI graph."""
    if is_api_format(data):
        return data
    if object_info is None:
        raise WorkflowFormatError(f"{name} is an editor (UI) workflow and no server is known to convert it; "
                                  f"{EXPORT_ADVICE}")  # fmt: skip
    problems = unconvertible(data)
    if problems:
        raise WorkflowFormatError(
            f"{name} is an editor (UI) workflow that this runner cannot convert exactly ({'; '.join(problems)}); "
            f"{EXPORT_ADVICE}"
        )
    try:
        api = ui_to_api(data, object_info)
    except (WorkflowFormatError, KeyError, IndexError, TypeError, ValueError) as e:
        raise WorkflowFormatError(f"{name} is an editor (UI) workflow that could not be converted ({e}); "
                                  f"{EXPORT_ADVICE}") from e  # fmt: skip
    for nid, node in api.items():
        for inp, value in node["inputs"].items():
            if is_link(value) and value[0] not in api:
                raise WorkflowFormatError(
                    f"{name}: input '{inp}' of node {nid} comes from node {value[0]}, which does not run; "
                    f"{EXPORT_ADVICE}"
                )
        title = object_info.get(node["class_type"], {}).get("display_name") or node["class_type"]
        node.setdefault("_meta", {"title": title})
    log.info("%s: converted the editor workflow to API format (%d nodes)", name, len(api))
    return api


def unconvertible(ui: dict) -> list[str]:
    """What in a UI graph needs the editor itself to turn into a prompt (empty: plain nodes only)."""
    problems = []
    if (ui.get("definitions") or {}).get("subgraphs"):
        problems.append("it contains subgraphs")
    nodes = {int(n["id"]): n for n in ui["nodes"]}
    for node in nodes.values():
        if str(node.get("type", "")).startswith("workflow>") or "/" in str(node.get("type", "")):
            problems.append(f"node {node['id']} is a group node ({node['type']})")
    for link in ui.get("links", []):
        origin = nodes.get(int(link[1]))
        if origin is not None and origin.get("type") in FRONTEND_ONLY:
            problems.append(f"node {origin['id']} ({origin['type']}) feeds another node's input")
    return sorted(set(problems))
