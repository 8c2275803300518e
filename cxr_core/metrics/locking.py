"""Inter-process file locks and safe paths inside ComfyUI's output folder.

Files the metrics write (CSV logs, FID statistics) are named by users in a
workflow, so a name must stay inside the output folder: no absolute paths, no
``..``, no drive letters. Writers take an exclusive lock on a sidecar
``<file>.lock`` (``filelock``: POSIX and Windows), so concurrent prompts, even
from several ComfyUI processes or runner shards sharing the folder, never
interleave. Torch-free: the runner uses it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from filelock import FileLock, Timeout

log = logging.getLogger("cxr_counterfactual.metrics.locking")

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,127}$")


def safe_output_path(output_dir: str | os.PathLike, name: str, input_name: str, suffix: str) -> Path:
    """Resolve ``name`` (e.g. ``cxr_metrics/run1.csv``) inside ``output_dir``; refuse anything that escapes.

    ``suffix`` is appended when the name lacks it. Folders are created.
    """
    raw = (name or "").strip()
    if not raw:
        raise ValueError(
            f"{input_name}: expected a file name inside ComfyUI's output folder, received an empty name"
        )
    if PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).is_absolute() or PureWindowsPath(raw).drive:
        raise ValueError(
            f"{input_name}: expected a path relative to ComfyUI's output folder, received the absolute path {raw!r}"
        )
    parts = re.split(r"[\\/]+", raw)
    bad = [p for p in parts if p in ("", ".", "..") or not _SAFE_PART.match(p)]
    if bad:
        raise ValueError(
            f"{input_name}: expected folder and file names of letters, digits, '_', '-', '.' and spaces "
            f"(no '..'), received {raw!r} (offending part {bad[0]!r})"
        )
    if not parts[-1].lower().endswith(suffix):
        parts[-1] += suffix
    root = Path(output_dir).resolve()
    path = root.joinpath(*parts).resolve()
    if root != path and root not in path.parents:
        raise ValueError(
            f"{input_name}: {raw!r} resolves outside ComfyUI's output folder (a symlinked folder?); give a "
            "name inside the output folder"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def exclusive_lock(path: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (``filelock``) for the duration of the block.

    Raises TimeoutError when another holder keeps it longer than ``timeout_s``.
    """
    lock = FileLock(str(path) + ".lock", timeout=timeout_s)
    try:
        lock.acquire()
    except Timeout:
        raise TimeoutError(f"could not lock {lock.lock_file} within {timeout_s:.0f}s") from None
    try:
        yield
    finally:
        lock.release()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
