"""Start the real ComfyUI (``main.py``) as a subprocess on a free loopback port."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .client import ComfyClient

log = logging.getLogger("cxr_counterfactual.server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalComfyServer:
    """A ComfyUI server process with its own input, output, temp and user folders.

    Use as a context manager; the process is always terminated on exit.
    ``model_dirs`` maps a model folder kind ("checkpoints", "clip_vision", ...)
    to extra folders searched for it. ``cpu`` (default) starts it with ``--cpu``.
    """

    comfyui_dir: Path
    python: str = sys.executable
    workdir: Path | None = None
    model_dirs: dict[str, list[str]] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    cpu: bool = True  # False: ComfyUI picks the GPU itself
    startup_timeout_s: float = 180.0
    port: int = 0
    base_url: str = ""
    input_dir: Path = field(init=False)
    output_dir: Path = field(init=False)
    log_path: Path = field(init=False)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> LocalComfyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cxr-comfy-")
            self.workdir = Path(self._tmp.name)
        wd = Path(self.workdir)
        self.input_dir, self.output_dir = wd / "input", wd / "output"
        for d in (self.input_dir, self.output_dir, wd / "temp", wd / "user"):
            d.mkdir(parents=True, exist_ok=True)
        model_args: list[str] = []
        if self.model_dirs:  # ComfyUI refuses an empty extra_model_paths file
            cfg = wd / "extra_model_paths.yaml"
            cfg.write_text(_model_paths_yaml(self.model_dirs))
            model_args = ["--extra-model-paths-config", str(cfg)]
        self.port = self.port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = wd / "server.log"
        cmd = [
            self.python, "main.py", *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--input-directory", str(self.input_dir),
            "--output-directory", str(self.output_dir), "--temp-directory", str(wd / "temp"),
            "--user-directory", str(wd / "user"), "--database-url", "sqlite:///:memory:",
            *model_args, *self.extra_args,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log.info("starting ComfyUI: %s", " ".join(cmd))
        with open(self.log_path, "wb") as fh:
            self._proc = subprocess.Popen(
                cmd, cwd=str(self.comfyui_dir), stdout=fh, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        client = ComfyClient(self.base_url)
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"ComfyUI exited with code {self._proc.returncode} during start:\n{self.log_tail()}"
                )
            if client.alive(timeout_s=2.0):
                return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {self.startup_timeout_s:.0f}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _model_paths_yaml(model_dirs: dict[str, list[str]]) -> str:
    if not model_dirs:
        return ""
    lines = ["cxr_counterfactual:"]
    for kind, dirs in model_dirs.items():
        lines.append(f"  {kind}: |")
        lines.extend(f"    {d}" for d in dirs)
    return "\n".join(lines) + "\n"
