"""The main job: the example counterfactual workflow, headless, on the demo radiograph.

Starts ComfyUI with this pack, puts the real PA radiograph RG1_UNCR.dcm
(pydicom-data) and its committed organ masks in the input folder, and runs
example_workflows/api/cxr_counterfactual_full.json: an effusion on the
patient's left. Uses your checkpoint if CXR_CHECKPOINT names one (a path, or a
file in ComfyUI's models/checkpoints); otherwise it generates the random
SD1.5-architecture checkpoint, whose images show mechanics, not medicine.
Everything it writes stays in <workdir>/output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from import_pack import REPO, import_pack

import_pack()  # cxr_runner and cxr_core only; ComfyUI runs in its own process
from cxr_pack.cxr_core.demo_assets import demo_label_map_path, demo_legend_path, demo_radiograph_path  # noqa: E402
from cxr_pack.cxr_runner.activity import activity_since, describe  # noqa: E402
from cxr_pack.cxr_runner.client import ComfyClient, output_images  # noqa: E402
from cxr_pack.cxr_runner.server import LocalComfyServer  # noqa: E402
from cxr_pack.cxr_runner.workflow_format import set_input  # noqa: E402

WORKFLOW = REPO / "example_workflows" / "api" / "cxr_counterfactual_full.json"
WHAT = {
    "cxr_counterfactual_full": "counterfactual radiograph",
    "organ_masks": "organ mask overlay",
    "prior": "spatial prior overlay",
    "attention": "attention heatmap, one per pathology word",
    "difference": "difference heat map with region and organ contours",
}
RANDOM_WARNING = (
    "NOTE: no checkpoint configured (CXR_CHECKPOINT); using a RANDOMLY INITIALISED SD1.5-architecture checkpoint.\n"
    "      The images show the mechanics of the pipeline, not medicine."
)


def resolve_checkpoint(comfy_dir: Path) -> tuple[Path, bool]:
    """(checkpoint file, is_random)."""
    wanted = os.environ.get("CXR_CHECKPOINT", "").strip()
    if wanted:
        for cand in (Path(wanted).expanduser(), comfy_dir / "models" / "checkpoints" / wanted):
            if cand.is_file():
                return cand.resolve(), False
        sys.exit(
            f"CXR_CHECKPOINT={wanted}: no such file (as a path or in {comfy_dir / 'models' / 'checkpoints'})"
        )
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "make_random_checkpoint.py")],
                         capture_output=True, text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"could not generate the random checkpoint:\n{out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1]), True


def montage(paths: list[Path], dest: Path, is_random: bool, height: int = 256) -> None:
    """The outputs side by side at one height, with a caption."""
    from PIL import Image, ImageDraw

    tiles = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        tiles.append(im.resize((round(im.width * height / im.height), height)))
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) + 1), height + 36), (24, 24, 28))
    x = 8
    for t in tiles:
        canvas.paste(t, (x, 8))
        x += t.width + 8
    note = "random weights: mechanics, not medicine" if is_random else "user checkpoint"
    caption = (
        f"organ masks | prior | counterfactual | attention of the last pathology word | difference  ({note})"
    )
    ImageDraw.Draw(canvas).text((8, height + 14), caption, fill=(230, 230, 230))
    canvas.save(dest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--comfyui-dir", default=os.environ.get("COMFYUI_DIR"), help="ComfyUI checkout ($COMFYUI_DIR)"
    )
    ap.add_argument(
        "--workdir", type=Path, default=REPO / "out" / "demo", help="input/output folders of the run"
    )
    ap.add_argument("--size", type=int, default=256, help="working size in px, multiple of 64 (512 on a GPU)")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps (all are taken; denoise 0.6 spreads them "
                    "over the last 60%% of the noise schedule)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: --cpu)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra argument for ComfyUI's main.py "
                    "(repeatable), e.g. --server-arg=--lowvram")  # fmt: skip
    args = ap.parse_args()
    if not args.comfyui_dir:
        sys.exit("COMFYUI_DIR is not set; run `bash scripts/main.sh`, or pass --comfyui-dir")
    t0 = time.monotonic()
    comfy_dir = Path(args.comfyui_dir)
    ckpt, is_random = resolve_checkpoint(comfy_dir)
    if is_random:
        print(RANDOM_WARNING, flush=True)
    else:
        print(f"checkpoint: {ckpt}", flush=True)
    workdir = args.workdir.resolve()
    if (workdir / "output").exists():
        shutil.rmtree(workdir / "output")
    server = LocalComfyServer(comfyui_dir=comfy_dir, python=sys.executable, workdir=workdir, cpu=not args.gpu,
                              model_dirs={"checkpoints": [str(ckpt.parent)]}, extra_args=args.server_arg)  # fmt: skip
    with server:
        print(f"ComfyUI is up at {server.base_url} (log: {server.log_path})", flush=True)
        shutil.copy(demo_radiograph_path(), server.input_dir / "RG1_UNCR.dcm")
        shutil.copy(demo_label_map_path(), server.input_dir / "RG1_UNCR_labels.png")
        shutil.copy(demo_legend_path(), server.input_dir / "RG1_UNCR_labels.json")
        api = json.loads(WORKFLOW.read_text())
        set_input(api, "Checkpoint", "ckpt_name", ckpt.name)
        set_input(api, "Radiograph", "working_size", args.size)
        set_input(api, "Sampler", "steps", args.steps)
        set_input(api, "Sampler", "seed", args.seed)
        client = ComfyClient(server.base_url)
        print(f"running {WORKFLOW.relative_to(REPO)} at {args.size}px, {args.steps} steps ...", flush=True)
        offset = server.log_path.stat().st_size
        entry = client.run(api, timeout_s=3600)
        activity = activity_since(server.log_path, offset)
    records = [r for out in entry["outputs"].values() for r in out.get("cxr_metrics", [])]
    report = server.output_dir / "cxr" / "metrics_report.json"
    report.write_text(json.dumps(
        {"random_weights": is_random, "checkpoint": ckpt.name, "records": records, "regulation": activity}, indent=2
    ))  # fmt: skip
    print(f"\nDone in {time.monotonic() - t0:.0f} s.")
    for record in activity:
        print(f"  regulation: {describe(record)}")
    print(f"Outputs in {server.output_dir}:")
    saved = {}
    for img in output_images(entry):
        if img.get("type") != "output":
            continue  # node previews live in the temp folder
        path = server.output_dir / img["subfolder"] / img["filename"]
        key = next((k for k in WHAT if img["filename"].startswith(k)), None)
        saved[key] = path
        print(f"  {WHAT.get(key, 'image'):52s} {path}")
    summary = server.output_dir / "cxr" / "demo_summary.png"
    montage([saved[k] for k in ("organ_masks", "prior", "cxr_counterfactual_full", "attention", "difference")
             if k in saved], summary, is_random)  # fmt: skip
    print(f"  {'all of the above side by side':52s} {summary}")
    print(f"  {'metrics report (JSON)':52s} {report}")
    print(f"  {'metrics table (CSV, one row per run)':52s} {server.output_dir / 'cxr' / 'metrics.csv'}")
    for out in entry["outputs"].values():
        for line in out.get("text", []):
            print(f"    {line}")
    if is_random:
        print("\n" + RANDOM_WARNING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
