"""Address workflow inputs as ``"Node title.input"`` and set them: ``--set``, ``--map`` and study variants.

API-format workflows keep each node's title in ``_meta.title``; a target names a
node by that title or by its id. Titles may contain dots, input names do not,
so the text splits at the last dot. Every node with the title is set.
"""

from __future__ import annotations

import copy
import json
from typing import Any, NamedTuple

from .workflow_format import WorkflowFormatError


class Target(NamedTuple):
    node: str  # a node's _meta.title, or its id
    input: str

    def __str__(self) -> str:
        return f"{self.node}.{self.input}"


class Override(NamedTuple):
    target: Target
    value: Any


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, booleans, lists, quoted strings), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_target(text: str) -> Target:
    """``'Node title.input'`` (or ``'12.input'``) -> Target."""
    node, dot, name = text.strip().rpartition(".")
    if not dot or not node.strip() or not name.strip():
        raise WorkflowFormatError(f"'{text}': expected 'Node title.input_name' (or 'node_id.input_name')")
    return Target(node.strip(), name.strip())


def parse_override(text: str) -> Override:
    """``'Node title.input=value'`` -> Override (the value parsed as JSON when possible)."""
    target, eq, value = text.partition("=")
    if not eq:
        raise WorkflowFormatError(f"--set '{text}': expected 'Node title.input=value'")
    return Override(parse_target(target), parse_value(value))


def titles(api: dict) -> list[str]:
    """Every node as 'title (id N)' for error messages."""
    return [f"'{n.get('_meta', {}).get('title', nid)}' (id {nid})" for nid, n in api.items()]


def node_ids(api: dict, node: str) -> list[str]:
    """Ids of the nodes titled ``node``; else the node with that id; else []."""
    hits = [nid for nid, n in api.items() if n.get("_meta", {}).get("title") == node]
    return hits or ([node] if node in api else [])


def check_target(api: dict, target: Target) -> list[str]:
    """The node ids ``target`` sets; raises WorkflowFormatError naming the valid titles or inputs."""
    ids = node_ids(api, target.node)
    if not ids:
        raise WorkflowFormatError(
            f"'{target}': no node titled or numbered '{target.node}'; nodes in this workflow: {', '.join(titles(api))}"
        )
    for nid in ids:
        inputs = api[nid].get("inputs", {})
        values = [k for k, v in inputs.items() if not _is_link(v)]
        if target.input not in inputs:
            raise WorkflowFormatError(
                f"'{target}': node {nid} ({api[nid].get('class_type')}) has no input '{target.input}'; "
                f"its value inputs: {', '.join(values) or '(none)'}"
            )
        if _is_link(inputs[target.input]):
            raise WorkflowFormatError(
                f"'{target}': input '{target.input}' of node {nid} is a link from another node, not a value; "
                f"its value inputs: {', '.join(values) or '(none)'}"
            )
    return ids


def apply_overrides(api: dict, overrides: list[Override]) -> dict:
    """A copy of ``api`` with every override applied (``api`` itself is unchanged)."""
    out = copy.deepcopy(api)
    for target, value in overrides:
        for nid in check_target(out, target):
            out[nid]["inputs"][target.input] = value
    return out


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )
