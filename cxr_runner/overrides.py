"""``--set "Node Title.input=value"`` overrides for API-format workflows."""

from __future__ import annotations

import json
from typing import Any

from .workflow_format import WorkflowFormatError, set_input


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_target(target: str) -> tuple[str, str]:
    """'Node Title.input' -> ('Node Title', 'input'); titles may contain dots, input names do not."""
    if "." not in target:
        raise WorkflowFormatError(f"'{target}': expected 'Node title.input_name' (or 'node_id.input_name')")
    title, name = target.rsplit(".", 1)
    return title.strip(), name.strip()


def parse_override(text: str) -> tuple[str, str, Any]:
    if "=" not in text:
        raise WorkflowFormatError(f"--set '{text}': expected 'Node title.input=value'")
    target, value = text.split("=", 1)
    title, name = parse_target(target)
    return title, name, parse_value(value)


def apply_overrides(api: dict, overrides: list[tuple[str, str, Any]]) -> dict:
    """A copy of ``api`` with the overrides applied (unknown titles or inputs are clear errors)."""
    out = json.loads(json.dumps(api))
    for title, name, value in overrides:
        set_input(out, title, name, value)
    return out
