"""Speed and memory of the regulation modules against plain sampling, measured in one run.

    python scripts/benchmark.py attention   # plain vs AnatomyAttentionGate + PathologyCrossAttnReweight
    python scripts/benchmark.py correction  # plain vs EnergyLatentCorrector (truncated / full gradient pass)

Each configuration runs in its own subprocess on a randomly initialised
SD1.5-architecture UNet (random weights: mechanics, not medicine), so peak
memory is per configuration: torch.cuda.max_memory_allocated on a GPU, the
process's peak RSS on the CPU. Prints a table of seconds, peak MiB and the
ratios to plain sampling. Needs COMFYUI_DIR (scripts/setup_host.sh prints it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT = "chest x-ray, left pleural effusion"
SUITES = {
    "attention": ["plain", "gate+reweight"],
    "correction": ["plain", "corrected", "corrected-no-truncation"],
}


def _load_pack():  # noqa: ANN202
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        sys.exit("COMFYUI_DIR is not set; run: source $(bash scripts/setup_host.sh | tail -1)")
    sys.path.insert(0, comfy_dir)
    import comfy.cli_args

    comfy.cli_args.args.cpu = not _cuda()
    spec = importlib.util.spec_from_file_location(
        "cxr_pack", REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    pack = importlib.util.module_from_spec(spec)
    sys.modules["cxr_pack"] = pack
    spec.loader.exec_module(pack)
    return pack


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _masks(size: int):  # noqa: ANN202
    import torch

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    right = (((xx + 0.45) / 0.3) ** 2 + (yy / 0.6) ** 2 <= 1).float()  # image left = patient right
    left = (((xx - 0.45) / 0.3) ** 2 + (yy / 0.6) ** 2 <= 1).float()
    heart = (((xx - 0.1) / 0.25) ** 2 + ((yy - 0.3) / 0.2) ** 2 <= 1).float()
    prior = left * (yy > 0.25).float()
    return torch.stack([right, left, heart]), prior[None]


def run_one(config: str, args: argparse.Namespace) -> dict:
    """Build, patch and sample once (after a 1-step warm-up); return seconds and peak memory."""
    import torch

    _load_pack()
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sample
    import comfy.sd1_clip
    from cxr_pack.cxr_core.organ_masks import OrganMasks
    from cxr_pack.cxr_core.random_models import build_sd15_base_model
    from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
    from cxr_pack.nodes.energy_corrector import EnergyLatentCorrector
    from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight

    dev = comfy.model_management.get_torch_device()
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    with torch.inference_mode():
        base = build_sd15_base_model(320, seed=0, dtype=dtype)
        model = comfy.model_patcher.ModelPatcher(base, dev, comfy.model_management.unet_offload_device())
        tok = comfy.sd1_clip.SD1Tokenizer()
        organ, prior = _masks(args.size)
        organs = OrganMasks(("right_lung", "left_lung", "heart"), organ, (args.size, args.size))
        if config == "gate+reweight":
            model = AnatomyAttentionGate.execute(
                model, organs, organs="all", strength=4.0, hard=False, tau=0.5, sites="64,32", start_percent=0.0,
                end_percent=1.0, background="free", enabled=True,
            ).result[0]  # fmt: skip
            model = PathologyCrossAttnReweight.execute(
                model, tok, TEXT, "pleural, effusion", prior, lambda_in=3.0, lambda_out=3.0, start_percent=0.0,
                end_percent=0.4, sites="all", enabled=True,
            ).result[0]  # fmt: skip
        elif config.startswith("corrected"):
            model = EnergyLatentCorrector.execute(
                model, tok, TEXT, "pleural, effusion", prior, eta=30.0, iterations=1, end_percent=0.25, kappa=0.1,
                energy_threshold=0.0, sites="16", truncate=config == "corrected", enabled=True,
            ).result[0]  # fmt: skip
        g = torch.Generator().manual_seed(0)
        pos = [[torch.randn(1, 77, 768, generator=g), {}]]
        neg = [[torch.randn(1, 77, 768, generator=g), {}]]
        latent = torch.zeros(1, 4, args.size // 8, args.size // 8)
        noise = comfy.sample.prepare_noise(latent, 0)

        def go(steps: int) -> None:
            out = comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", pos, neg, latent,
                                      disable_pbar=True, seed=0)  # fmt: skip
            if dev.type == "cuda":
                torch.cuda.synchronize()
            assert torch.isfinite(out).all()

        go(1)  # warm-up: loads weights, builds kernels
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        runs = []
        for _ in range(args.repeat):  # the fastest of N runs damps a shared machine's noise
            t0 = time.perf_counter()
            go(args.steps)
            runs.append(time.perf_counter() - t0)
        seconds = min(runs)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"config": config, "seconds": seconds, "peak_mib": peak, "device": str(dev)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite", choices=sorted(SUITES))
    ap.add_argument("--size", type=int, default=512, help="image size in px (latent = size/8)")
    ap.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default 20 attention, 30 correction)"
    )
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per configuration; the fastest counts")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.steps = args.steps or (20 if args.suite == "attention" else 30)
    if args.one:
        sys.stdout.write(json.dumps(run_one(args.one, args)) + "\n")
        return 0
    rows = []
    for config in SUITES[args.suite]:
        cmd = [
            sys.executable,
            __file__,
            args.suite,
            "--size",
            str(args.size),
            "--steps",
            str(args.steps),
            "--one",
            config,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-3000:])
            return out.returncode
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(
            f"  {config:26s} {rows[-1]['seconds']:9.2f} s  peak {rows[-1]['peak_mib']:9.0f} MiB", flush=True
        )
    base = rows[0]
    print(f"\n{args.suite}: SD1.5-architecture random UNet, {args.size}x{args.size}, {args.steps} steps, euler, cfg 5, best of {args.repeat}, "
          f"device {base['device']} ({platform.processor() or platform.machine()}, {os.cpu_count()} cpus)")  # fmt: skip
    print(f"{'config':26s} {'seconds':>9s} {'time ratio':>11s} {'peak MiB':>10s} {'mem ratio':>10s}")
    for r in rows:
        r["time_ratio"] = r["seconds"] / base["seconds"]
        r["mem_ratio"] = r["peak_mib"] / base["peak_mib"]
        print(
            f"{r['config']:26s} {r['seconds']:9.2f} {r['time_ratio']:11.3f} {r['peak_mib']:10.0f} {r['mem_ratio']:10.3f}"
        )
    if args.suite == "correction":
        full, trunc = rows[2], rows[1]
        saving = 1 - (trunc["seconds"] - base["seconds"]) / max(full["seconds"] - base["seconds"], 1e-9)
        print(f"truncation saves {saving:.1%} of the correction's extra time")
    if args.json:
        args.json.write_text(
            json.dumps({"suite": args.suite, "size": args.size, "steps": args.steps, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
