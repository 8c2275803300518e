"""Start ComfyUI headless with this pack and list the nodes it registered."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for cxr_runner only; it never imports ComfyUI

from cxr_runner.client import ComfyClient  # noqa: E402
from cxr_runner.server import LocalComfyServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--comfyui-dir",
        default=os.environ.get("COMFYUI_DIR"),
        help="ComfyUI checkout (default: $COMFYUI_DIR)",
    )
    args = ap.parse_args()
    if not args.comfyui_dir:
        print("COMFYUI_DIR is not set; run scripts/setup_host.sh or pass --comfyui-dir", file=sys.stderr)
        return 2
    with LocalComfyServer(comfyui_dir=Path(args.comfyui_dir), python=sys.executable) as server:
        info = ComfyClient(server.base_url).object_info()
        ours = sorted(
            (k, v) for k, v in info.items() if v.get("category", "").startswith("CXR Counterfactual")
        )
        print(f"ComfyUI answered at {server.base_url}; this pack registered {len(ours)} node(s):")
        for name, node in ours:
            print(f"  {name:32s} {node['category']:40s} -> {', '.join(node['output']) or '(output node)'}")
    return 0 if ours else 1


if __name__ == "__main__":
    raise SystemExit(main())
