"""Resolve user-given file names strictly inside one base folder (ComfyUI's input folder).

A workflow is data from anywhere, so its file names are untrusted: ``..``
segments, absolute paths and symlinks that resolve outside the base folder are
refused. The base folder is passed in (the nodes take it from
``folder_paths.get_input_directory()``), so this module needs no ComfyUI.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

log = logging.getLogger("cxr_counterfactual.input_paths")

_ANNOTATION = " [input]"  # ComfyUI's annotated file names ("x.png [input]")


class InputPathError(ValueError):
    """A file name that is missing, malformed or points outside the input folder."""


def resolve_input_path(
    name: str, base_dir: str | os.PathLike, *, what: str = "file", kind: str = "file"
) -> Path:
    """The real path of ``name`` (relative, '/'-separated) inside ``base_dir``.

    ``kind`` is "file" or "dir". Raises :class:`InputPathError` naming the input
    (``what``), what was expected and what was received.
    """
    raw = (name or "").strip()
    if raw.endswith(_ANNOTATION):
        raw = raw[: -len(_ANNOTATION)].strip()
    if not raw:
        raise InputPathError(
            f"{what}: no file name given; expected a path relative to ComfyUI's input folder"
        )
    if PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).is_absolute() or PureWindowsPath(raw).drive:
        raise InputPathError(
            f"{what}: absolute paths are not allowed (received '{raw}'); copy the file into ComfyUI's input "
            f"folder ({base_dir}) and give its path relative to it"
        )
    parts = PurePosixPath(raw.replace("\\", "/")).parts
    if any(p == ".." for p in parts):
        raise InputPathError(
            f"{what}: '..' is not allowed in file names (received '{raw}'); files must be inside ComfyUI's "
            f"input folder ({base_dir})"
        )
    base = Path(base_dir).resolve()
    candidate = base.joinpath(*parts)
    real = candidate.resolve()
    if real != base and base not in real.parents:
        raise InputPathError(
            f"{what}: '{raw}' resolves to {real}, outside ComfyUI's input folder ({base}) (a symlink out of "
            "the folder?); copy the file itself into the input folder"
        )
    if not real.exists():
        raise InputPathError(
            f"{what}: '{raw}' not found in ComfyUI's input folder ({base}){_suggest(raw, base)}"
        )
    if kind == "file" and not real.is_file():
        raise InputPathError(f"{what}: '{raw}' is a folder, expected a file")
    if kind == "dir" and not real.is_dir():
        raise InputPathError(f"{what}: '{raw}' is a file, expected a folder of per-organ mask images")
    return real


def list_input_files(base_dir: str | os.PathLike, extensions: tuple[str, ...]) -> list[str]:
    """Files (recursive, '/'-separated relative names) under ``base_dir`` with one of ``extensions``."""
    base = Path(base_dir)
    if not base.is_dir():
        return []
    found = []
    for path in base.rglob("*"):
        if path.is_file() and path.name.lower().endswith(extensions) and not path.name.startswith("."):
            found.append(path.relative_to(base).as_posix())
    return sorted(found)


def _suggest(raw: str, base: Path) -> str:
    try:
        names = [p.relative_to(base).as_posix() for p in base.rglob("*") if not p.name.startswith(".")][:2000]
    except OSError:
        return ""
    close = difflib.get_close_matches(raw, names, n=3, cutoff=0.5)
    return f"; did you mean {close}?" if close else ""


def path_fingerprint(path: str | os.PathLike) -> str:
    """A cheap change marker for a file or a folder's files: names, sizes and modification times."""
    p = Path(path)
    entries = [p] if p.is_file() else sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else []
    parts = []
    for q in entries:
        st = q.stat()
        parts.append(f"{q.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts) or f"missing:{p}"
