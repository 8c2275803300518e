"""Put local files named in a manifest into the server's input folder (``POST /upload/image``).

ComfyUI's ``/upload/image`` (server.py ``image_upload``) takes a multipart form:
``image`` (the file), ``type`` (``input``), ``subfolder`` and ``overwrite``, and
answers ``{"name", "subfolder", "type"}``. It stores the bytes as they are, so
DICOMs, label maps and NPZ files travel too. Files go to
``cxr_runner/<content hash>/<name>``: a file already there (``HEAD /view``) is
not sent again, and a changed file gets a new folder. A file's ``.json``
sidecar (a label map's legend) goes with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

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

    def __init__(self, base_url: str, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
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
        if not self.exists(path.name, subfolder):
            for p in _with_sidecar(path):
                self.upload(p, subfolder)
                log.info("uploaded %s to %s's input folder as %s/%s", p, self.base_url, subfolder, p.name)
        name = f"{subfolder}/{path.name}"
        with self._lock:
            self._names[(path, digest)] = name
        return name

    def exists(self, name: str, subfolder: str) -> bool:
        query = urllib.parse.urlencode({"filename": name, "subfolder": subfolder, "type": "input"})
        req = urllib.request.Request(f"{self.base_url}/view?{query}", method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return False

    def upload(self, path: Path, subfolder: str) -> str:
        """POST one file; returns 'subfolder/name' as the server stored it."""
        boundary = uuid.uuid4().hex
        fields = {"type": "input", "subfolder": subfolder, "overwrite": "true"}
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body += path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"{self.base_url}/upload/image", data=body, method="POST")
        req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                info = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise OSError(f"{self.base_url}/upload/image refused {path} (HTTP {e.code})") from e
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]


def _with_sidecar(path: Path) -> list[Path]:
    sidecar = path.with_suffix(".json")
    return [path, sidecar] if path.suffix.lower() != ".json" and sidecar.is_file() else [path]
