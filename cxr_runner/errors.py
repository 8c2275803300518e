"""Errors the runner reports to the user as one line (the command exits with status 2)."""

from __future__ import annotations


class RunnerError(ValueError):
    """Bad input to the runner: a file, a manifest, a mapping, a study or a server that is not as expected."""
