"""Write the seeded, randomly initialised SD1.5-architecture checkpoint (once) and print its path.

    python scripts/make_random_checkpoint.py [--seed 0] [--cache DIR]

UNet + CLIP-L text encoder + VAE, fp16, original LDM layout: ComfyUI's
CheckpointLoaderSimple detects it as SD1.5. Random weights show mechanics, not
medicine. Needs COMFYUI_DIR (scripts/setup_host.sh prints it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from import_pack import NoComfyUI, import_pack, use_comfyui


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    default_cache = os.environ.get(
        "CXR_CACHE_DIR", str(Path.home() / ".cache" / "comfyui-cxr-counterfactual")
    )
    ap.add_argument("--cache", type=Path, default=Path(default_cache))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        use_comfyui(cpu=True)
    except NoComfyUI as e:
        sys.exit(str(e))
    import_pack()
    from cxr_pack.cxr_core.random_models import ensure_random_sd15_checkpoint

    print(ensure_random_sd15_checkpoint(args.cache, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
