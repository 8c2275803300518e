"""Import this checkout outside ComfyUI: the one way tests, scripts and benchmarks do it.

The repository root is a ComfyUI custom-node folder. Its ``nodes/`` package would shadow
ComfyUI's ``nodes.py`` if the root were on ``sys.path``, so the root never goes there: the
checkout is registered as the package ``cxr_pack`` (ComfyUI, too, imports the folder as one
package), and its parts are imported as ``cxr_pack.cxr_core``, ``cxr_pack.cxr_runner`` and
``cxr_pack.nodes``.

    import import_pack                       # scripts/ is on sys.path (scripts run from it,
    import_pack.use_comfyui(cpu=True)        #   pytest adds it: pyproject.toml's pythonpath)
    import_pack.import_pack(nodes=True)
    from cxr_pack.cxr_core.random_models import build_tiny_model_patcher

Without ``use_comfyui`` only the parts that never import ComfyUI work (``cxr_runner``,
``cxr_core`` modules that need no ``comfy``); ``nodes=True`` needs it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = "cxr_pack"
REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("CXR_CACHE_DIR", Path.home() / ".cache" / "comfyui-cxr-counterfactual"))


class NoComfyUI(RuntimeError):
    """The ComfyUI checkout to import from is missing."""


def comfyui_dir() -> Path:
    """``$COMFYUI_DIR``, else the host scripts/setup_host.sh builds in the cache."""
    return Path(os.environ.get("COMFYUI_DIR") or CACHE / "ComfyUI")


def use_comfyui(path: Path | None = None, *, cpu: bool) -> Path:
    """Put a ComfyUI checkout on ``sys.path`` and tell it whether to run on the CPU (``--cpu``)."""
    path = Path(path or comfyui_dir())
    if not (path / "comfy" / "model_patcher.py").is_file():
        raise NoComfyUI(
            f"No ComfyUI checkout at {path}. Run `bash scripts/setup_host.sh` first, or set COMFYUI_DIR "
            "to your ComfyUI folder"
        )
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    return path


def import_pack(*, nodes: bool = False) -> ModuleType:
    """The checkout as the package ``cxr_pack``; ``nodes=True`` also runs its ``__init__`` (the V3 nodes)."""
    pack = sys.modules.get(PACKAGE)
    if pack is None:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
        )
        pack = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = pack
    if nodes and not hasattr(pack, "comfy_entrypoint"):
        pack.__spec__.loader.exec_module(pack)
    return pack
