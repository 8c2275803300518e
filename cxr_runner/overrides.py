"""Address workflow inputs as ``"Node title.input"`` and set them: ``--set``, ``--map`` and study variants.

API-format workflows keep each node's title in ``_meta.title``; a target names a
node by that title or by its id. Titles may contain dots, input names do not,
so the text splits at the last dot. Every node with the title is set
(workflow_format.set_input: the one lookup, by title, else by id).
"""

from __future__ import annotations

import copy
import json
from typing import Any, NamedTuple

from .workflow_format import WorkflowFormatError, set_input, target_nodes


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


def check_target(api: dict, target: Target) -> list[str]:
    """The node ids ``target`` sets; raises WorkflowFormatError naming the valid titles or inputs."""
    return target_nodes(api, target.node, target.input)


def apply_overrides(api: dict, overrides: list[Override]) -> dict:
    """A copy of ``api`` with every override applied (``api`` itself is unchanged)."""
    out = copy.deepcopy(api)
    for target, value in overrides:
        set_input(out, target.node, target.input, value)
    return out
