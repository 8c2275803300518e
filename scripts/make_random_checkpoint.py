"""Write the seeded, randomly initialised SD1.5-architecture checkpoint (once) and print its path.

    python scripts/make_random_checkpoint.py [--seed 0] [--cache DIR]

UNet + CLIP-L text encoder + VAE, fp16, original LDM layout: ComfyUI's
CheckpointLoaderSimple detects it as SD1.5. Random weights show mechanics, not
medicine. Needs COMFYUI_DIR (scripts/setup_host.sh prints it).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    default_cache = os.environ.get(
        "CXR_CACHE_DIR", str(Path.home() / ".cache" / "comfyui-cxr-counterfactual")
    )
    ap.add_argument("--cache", type=Path, default=Path(default_cache))
    args = ap.parse_args()
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        sys.exit("COMFYUI_DIR is not set; run: source $(bash scripts/setup_host.sh | tail -1)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(
        0, comfy_dir
    )  # the repository itself stays off sys.path: its nodes/ would shadow ComfyUI's
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    spec = importlib.util.spec_from_file_location(
        "cxr_core", REPO / "cxr_core" / "__init__.py", submodule_search_locations=[str(REPO / "cxr_core")]
    )
    core = importlib.util.module_from_spec(spec)
    sys.modules["cxr_core"] = core
    spec.loader.exec_module(core)
    from cxr_core.random_models import ensure_random_sd15_checkpoint

    print(ensure_random_sd15_checkpoint(args.cache, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
