"""Which steps each regulation module acted on, read back from a ComfyUI server's log.

The pack's engine logs one ``cxr-activity {json}`` line at the end of every
sampling call (docs/METHOD.md, "Windows"): the call's step count and sigmas,
and per module the steps it acted on and how many attention calls (or, for
the corrector, gradient passes) that took.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER = "cxr-activity "


def activity_records(log_text: str) -> list[dict]:
    """Every activity record in a log text, in order."""
    return [json.loads(line.split(MARKER, 1)[1]) for line in log_text.splitlines() if MARKER in line]


def activity_since(log_path: Path, offset: int) -> list[dict]:
    """The records a server logged after byte ``offset`` of its log file."""
    with open(log_path, "rb") as fh:
        fh.seek(offset)
        return activity_records(fh.read().decode(errors="replace"))


def describe(record: dict) -> str:
    """One line per sampling call: 'n steps: Module steps 0-7 (8), ...'."""
    parts = []
    for label, m in record.get("modules", {}).items():
        steps = m.get("steps", [])
        span = (
            f"{steps[0]}-{steps[-1]}"
            if steps and steps == list(range(steps[0], steps[-1] + 1))
            else str(steps)
        )
        parts.append(f"{label} on steps {span} ({len(steps)} of {record.get('n_steps', '?')})")
    return f"{record.get('n_steps', '?')}-step sampling call: " + ("; ".join(parts) or "no module acted")
