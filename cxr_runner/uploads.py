"""Put local files named in a manifest into the server's input folder (``ComfyClient.upload``).

The server stores the bytes as they are, so DICOMs, label maps and NPZ files
travel too. Files go to
``cxr_runner/<content hash>/<name>``: a file already there (``HEAD /view``) is
not sent again, and a changed file gets a new folder. A file's ``.json``
sidecar (a label map's legend) goes with it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from .client import ComfyClient

log = logging.getLogger("cxr_counterfactual.runner")


def file_digest(path: Path) -> str:
    """sha256 of a file and of its .json sidecar, if any."""
    h = hashlib.sha256()
    for p in _with_sidecar(path):
        with p.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def local_file(cell: str, base_dirs: list[Path]) -> Path | None:
    """The local file a manifest cell names (absolute, or relative to one of ``base_dirs``), else None."""
    if not cell:
        return None
    raw = Path(cell).expanduser()
    candidates = [raw] if raw.is_absolute() else [d / raw for d in base_dirs]
    return next((c.resolve() for c in candidates if c.is_file()), None)


class Uploader:
    """Uploads to one server, each file content once per process."""

    def __init__(self, client: ComfyClient) -> None:
        self.client = client
        self._names: dict[tuple[Path, str], str] = {}
        self._lock = threading.Lock()

    def input_name(self, path: Path, digest: str | None = None) -> str:
        """The name that refers to ``path`` in the server's input folder, uploading it if needed."""
        digest = digest or file_digest(path)
        with self._lock:
            known = self._names.get((path, digest))
        if known:
            return known
        subfolder = f"cxr_runner/{digest[:16]}"
        if not self.client.input_exists(path.name, subfolder):
            for p in _with_sidecar(path):
                stored = self.client.upload(p, subfolder)
                log.info("uploaded %s to %s's input folder as %s", p, self.client.base_url, stored)
        name = f"{subfolder}/{path.name}"
        with self._lock:
            self._names[(path, digest)] = name
        return name


def _with_sidecar(path: Path) -> list[Path]:
    sidecar = path.with_suffix(".json")
    return [path, sidecar] if path.suffix.lower() != ".json" and sidecar.is_file() else [path]
