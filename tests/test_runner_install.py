"""``pip install .`` gives a working ``cxr-runner`` command in a fresh virtual environment.

The environment is new and empty; the runner's dependencies (requests, filelock,
tqdm, websocket-client, pillow, ...) come from this test's own environment through
a ``.pth`` file, so pip resolves them without a network (``--no-index``) and
installs only this project, built from a copy of its tracked files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runner_helpers import image_metrics_workflow

REPO = Path(__file__).resolve().parents[1]


def _source_copy(dest: Path) -> Path:
    """The tracked files `pip install .` builds from (nothing from a developer's working folders)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in files.decode().split("\0"):
        if (
            name
            and (REPO / name).is_file()
            and not name.startswith(("tests/", "example_workflows/", "docs/"))
        ):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes((REPO / name).read_bytes())
    return dest


@pytest.fixture(scope="module")
def installed_runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``cxr-runner`` script of a fresh venv that has this project installed with pip."""
    root = tmp_path_factory.mktemp("install")
    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(purelib, "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-build-isolation",
         "--quiet", str(_source_copy(root / "src"))],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    where = subprocess.run([str(python), "-c", "import cxr_runner; print(cxr_runner.__file__)"], cwd=root,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert where.startswith(purelib), f"cxr_runner imported from {where}, not from the fresh venv"
    return venv / "bin" / "cxr-runner"


def test_installed_command_lists_every_subcommand(installed_runner: Path) -> None:
    proc = subprocess.run([str(installed_runner), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: cxr-runner" in proc.stdout
    assert "{run,manifest,study,report,aggregate,dataset}" in proc.stdout
    # the installed runner imports neither torch nor ComfyUI, although this venv could import torch
    code = ("import sys, cxr_runner.cli, cxr_runner.study; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'comfy', 'folder_paths', 'nodes'}))")  # fmt: skip
    python = installed_runner.parent / "python"
    loaded = subprocess.run([str(python), "-c", code], cwd=installed_runner.parents[2], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


@pytest.mark.server
def test_installed_command_runs_a_workflow_on_the_real_server(
    installed_runner: Path, comfy_server, tmp_path: Path
) -> None:
    # names no other test counts in the session server's input folder (test_runner_server counts film*.png)
    film = np.zeros((48, 64, 3), np.uint8)
    film[8:40, 10:54] = 180
    Image.fromarray(film).save(tmp_path / "installed_xray.png")
    region = np.zeros((48, 64), np.uint8)
    region[12:36, 20:44] = 255
    Image.fromarray(region).save(tmp_path / "installed_region.png")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(image_metrics_workflow(blur=True, prefix="installed")))
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(installed_runner), "run", str(wf), "--server", comfy_server.base_url, "--quiet", "--out", str(out),
         "--file", f"Radiograph.image={tmp_path / 'installed_xray.png'}", "--file", f"Region.image={tmp_path / 'installed_region.png'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 2 and "metric.ssim_global" in lines[0].split(",")
    assert "metrics (node 4): {" in proc.stdout and '"ssim_global": ' in proc.stdout
