"""What a finished prompt must have produced before its row counts as done.

ComfyUI runs a prompt's output nodes (SaveImage, CXRMetrics, ...) and records
what each returned for the UI in the history entry's ``outputs``. A row is
only ``ok`` when every output node of its workflow is there with something in
it: a counterfactual image from each save node, a metrics record from each
metrics node. A prompt that ComfyUI ran only in part (an invalid node beside
valid ones, an output that produced nothing) is a failed row, named by node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .client import ComfyClient

log = logging.getLogger("cxr_counterfactual.runner")

# what each known output class must put in its history entry (others: any non-empty list)
REQUIRED_KEYS = {"SaveImage": "images", "CXRMetrics": "cxr_metrics", "CXRFID": "cxr_fid"}


class OutputClasses:
    """Which node classes are output nodes, asked of the server once per class (``/object_info/<class>``)."""

    def __init__(self, client: ComfyClient) -> None:
        self._client = client
        self._known: dict[str, bool] = {}
        self._lock = threading.Lock()

    def is_output(self, class_type: str) -> bool:
        with self._lock:
            if class_type in self._known:
                return self._known[class_type]
        info = self._client.object_info(class_type)
        flag = bool((info or {}).get(class_type, {}).get("output_node"))
        with self._lock:
            self._known[class_type] = flag
        return flag


def output_nodes(api: dict, is_output: Callable[[str], bool]) -> list[str]:
    """Ids of the workflow's output nodes, in id order."""
    ids = [
        nid for nid, node in api.items() if isinstance(node, dict) and is_output(str(node.get("class_type")))
    ]
    return sorted(ids, key=lambda nid: (int(nid), "") if nid.isdigit() else (1 << 30, nid))


def missing_outputs(api: dict, entry: dict, expected: list[str]) -> list[str]:
    """One line per expected output node that the history entry lacks or left empty."""
    produced = entry.get("outputs") or {}
    missing = []
    for nid in expected:
        node = api.get(nid, {})
        name = f"node {nid} '{(node.get('_meta') or {}).get('title') or node.get('class_type')}' ({node.get('class_type')})"
        got = produced.get(nid) or {}
        key = REQUIRED_KEYS.get(str(node.get("class_type")))
        if key is not None and not got.get(key):
            missing.append(f"{name} produced no '{key}'")
        elif key is None and not any(isinstance(v, list) and v for v in got.values()):
            missing.append(f"{name} produced nothing")
    return missing


def check_outputs(api: dict, entry: dict, expected: list[str], prompt_id: str) -> None:
    """Raise IncompleteOutputs naming every output node that produced nothing."""
    missing = missing_outputs(api, entry, expected)
    if missing:
        raise IncompleteOutputs(
            f"prompt {prompt_id} finished without all its outputs: {'; '.join(missing)}. Expected every output "
            "node of the workflow to produce its images/metrics; check the server log for that node, or remove "
            "the node from the workflow if it is not needed"
        )


class IncompleteOutputs(RuntimeError):
    """A prompt finished, but not every output node produced its output."""
