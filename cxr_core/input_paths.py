"""Resolve user-given file names strictly inside one base folder (ComfyUI's input folder).

A workflow is data from anywhere, so its file names are untrusted: ``..``
segments, absolute paths and symlinks that resolve outside the base folder are
refused. The base folder is passed in (the nodes take it from
``folder_paths.get_input_directory()``), so this module needs no ComfyUI.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import os
from collections.abc import Callable
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
    if "\x00" in raw or any(ord(c) < 32 for c in raw):
        raise InputPathError(
            f"{what}: the file name {raw!r} contains a control character (e.g. a NUL byte); expected a plain "
            "path relative to ComfyUI's input folder"
        )
    if PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).is_absolute() or PureWindowsPath(raw).drive:
        raise InputPathError(
            f"{what}: absolute paths are not allowed (received '{raw}'); copy the file into ComfyUI's input "
            "folder and give its path relative to it"
        )
    parts = PurePosixPath(raw.replace("\\", "/")).parts
    if any(p == ".." for p in parts):
        raise InputPathError(
            f"{what}: '..' is not allowed in file names (received '{raw}'); files must be inside ComfyUI's "
            "input folder"
        )
    base = Path(base_dir).resolve()
    candidate = base.joinpath(*parts)
    real = candidate.resolve()
    if real != base and base not in real.parents:
        raise InputPathError(
            f"{what}: '{raw}' resolves outside ComfyUI's input folder (a symlink out of the folder?); copy the "
            "file itself into the input folder"
        )
    if not real.exists():
        raise InputPathError(f"{what}: '{raw}' not found in ComfyUI's input folder{_suggest(raw, base)}")
    if kind == "file" and not real.is_file():
        raise InputPathError(f"{what}: '{raw}' is a folder, expected a file")
    if kind == "dir" and not real.is_dir():
        raise InputPathError(f"{what}: '{raw}' is a file, expected a folder of per-organ mask images")
    return real


def list_input_files(
    base_dir: str | os.PathLike, extensions: tuple[str, ...], sniff: Callable[[Path], bool] | None = None
) -> list[str]:
    """Files (recursive, '/'-separated relative names) under ``base_dir`` with one of ``extensions``.

    Files without an extension are listed when ``sniff(path)`` says so (e.g. a
    DICOM preamble). Each folder's entries are cached against its modification
    time, so a large input folder (a runner's uploads) is not re-read at every
    validation.
    """
    base = Path(base_dir)
    if not base.is_dir():
        return []
    found: list[str] = []
    stack = [(base, "")]
    while stack:
        folder, prefix = stack.pop()
        files, subdirs, sniffed = _folder_entries(folder, sniff)
        found += [prefix + n for n in files if n.lower().endswith(extensions) or n in sniffed]
        stack += [(folder / d, f"{prefix}{d}/") for d in subdirs]
    return sorted(found)


# folder -> (mtime, files, subfolders, sniffed files): a cache of directory listings, not per-run state
_LISTINGS: dict[str, tuple[int, list[str], list[str], frozenset[str]]] = {}
_MAX_CACHED_FOLDERS = 4096


def _folder_entries(
    folder: Path, sniff: Callable[[Path], bool] | None
) -> tuple[list[str], list[str], frozenset[str]]:
    """A folder's visible files, subfolders and sniffed extensionless files, re-read when its mtime changes."""
    key = str(folder)
    try:
        mtime = folder.stat().st_mtime_ns
    except OSError:
        return [], [], frozenset()
    cached = _LISTINGS.get(key)
    if cached is None or cached[0] != mtime:
        files, dirs, sniffed = [], [], set()
        try:
            with os.scandir(folder) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir(follow_symlinks=False):
                        dirs.append(e.name)
                    elif e.is_file():
                        files.append(e.name)
                        if sniff is not None and "." not in e.name and sniff(Path(e.path)):
                            sniffed.add(e.name)
        except OSError:
            return [], [], frozenset()
        if len(_LISTINGS) >= _MAX_CACHED_FOLDERS:
            _LISTINGS.clear()
        cached = _LISTINGS[key] = (mtime, files, dirs, frozenset(sniffed))
    return cached[1], cached[2], cached[3]


def _suggest(raw: str, base: Path) -> str:
    try:
        found = (p.relative_to(base).as_posix() for p in base.rglob("*") if not p.name.startswith("."))
        names = list(itertools.islice(found, 2000))  # a bounded look, however large the input folder
    except OSError:
        return ""
    close = difflib.get_close_matches(raw, names, n=3, cutoff=0.5)
    return f"; did you mean {close}?" if close else ""


def shown_path(path: str | os.PathLike) -> str:
    """A folder as an error text may show it to an API client: under the home folder as '~/...', else
    only its last two parts, so the server's layout (user names, mount points) is not revealed."""
    p = Path(path)
    try:
        return "~/" + p.resolve().relative_to(Path.home().resolve()).as_posix()
    except (ValueError, RuntimeError, OSError):
        return ".../" + "/".join(p.parts[-2:])


def path_fingerprint(path: str | os.PathLike) -> str:
    """A cheap change marker for a file or a folder's files: names, sizes and modification times."""
    p = Path(path)
    entries = [p] if p.is_file() else sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else []
    parts = []
    for q in entries:
        st = q.stat()
        parts.append(f"{q.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts) or f"missing:{p}"
