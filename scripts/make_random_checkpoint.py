"""Write a seeded, randomly initialised model (once) and print its path.

    python scripts/make_random_checkpoint.py [--family sd15|sdxl|diffusers] [--seed 0] [--cache DIR]

sd15 (default): UNet + CLIP-L + VAE, fp16, original LDM layout (1.1 GB,
  CACHE/checkpoints/); CheckpointLoaderSimple detects it as SD1.5.
sdxl: an SDXL-family checkpoint, Segmind Vega's UNet layout + CLIP-L + CLIP-G +
  VAE, fp16 (3.3 GB, CACHE/checkpoints/); detected as SDXL (Segmind_Vega).
diffusers: the sd15 weights as a diffusers-format folder (unet/, text_encoder/,
  vae/, scheduler/, model_index.json; 2.1 GB, CACHE/diffusers/), the layout of
  RoentGen-type models; ComfyUI's DiffusersLoader loads it.
Random weights show mechanics, not medicine. Needs COMFYUI_DIR (scripts/setup_host.sh prints it).
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
    ap.add_argument("--family", choices=("sd15", "sdxl", "diffusers"), default="sd15")
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
    from cxr_pack.cxr_core import diffusers_export, random_models

    make = {
        "sd15": random_models.ensure_random_sd15_checkpoint,
        "sdxl": random_models.ensure_random_sdxl_checkpoint,
        "diffusers": diffusers_export.ensure_random_sd15_diffusers,
    }[args.family]
    print(make(args.cache, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
