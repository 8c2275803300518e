"""Input checks shared by every node of the pack.

ComfyUI's own validation converts a FLOAT widget value with ``float()`` and
compares it with the schema's min/max. ``float("nan")`` passes both
comparisons (every comparison with NaN is false), and ``inf`` passes a schema
without a max, so a ``NaN`` literal in an API prompt reaches the node. A
node-level ``validate_inputs(**kwargs)`` would switch ComfyUI's min/max and
combo checks off for every input (the host skips them for inputs its validator
takes, and a ``**kwargs`` validator takes all), so the check runs as the first
line of each ``execute`` instead; it also catches non-finite values that arrive
through a link.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from comfy_api.latest import io


def float_input_names(node: type[io.ComfyNode]) -> tuple[str, ...]:
    """Names of the FLOAT inputs in ``node``'s schema."""
    schema = node.define_schema()
    return tuple(i.id for i in schema.inputs if isinstance(i, io.Float.Input))


def require_finite(node: type[io.ComfyNode], inputs: Mapping[str, Any]) -> None:
    """Refuse NaN or +-Inf in any FLOAT input of ``node``, naming the node and the input.

    ``inputs`` is the execute call's arguments (``locals()`` at its first line).
    Absent optional inputs (None) are skipped.
    """
    schema = node.define_schema()
    for inp in schema.inputs:
        if not isinstance(inp, io.Float.Input):
            continue
        value = inputs.get(inp.id)
        if value is None or isinstance(value, bool):
            continue
        try:
            finite = math.isfinite(float(value))
        except (TypeError, ValueError):
            finite = True  # not a number at all: left to the node's own checks
        if not finite:
            lo, hi = inp.min, inp.max
            span = f" between {lo} and {hi}" if lo is not None and hi is not None else ""
            raise ValueError(
                f"{schema.node_id}: {inp.id} must be a finite number{span}, received {value}; "
                f"set {inp.id} to a number (NaN and Inf are refused)"
            )
