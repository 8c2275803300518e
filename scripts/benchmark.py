"""Speed and memory of each regulation module against plain sampling, measured in one run.

    python scripts/benchmark.py                                  # 512/768/1024 px x batch 1/2/4, 30 steps
    python scripts/benchmark.py --sizes 512 --batches 1          # the target cell only
    python scripts/benchmark.py --smoke                          # CPU smoke: tiny UNet, 64 px, 2 steps

Configurations: plain sampling, each module alone (gate, reweight, correction) and all
three together; on request also ``gate_dense`` (the gate with the dense N x N bias
instead of its low-rank form), ``hard_gate`` (block-sparse by organ) and
``hard_gate_dense`` (the -inf mask), and ``gate_reweight`` (the two attention modules
together, as the issue's first target names them). All with the nodes' defaults (gate sites fine, mid (64,32) over the whole run, reweight
all sites over 0..0.4, correction 16x16 sites over 0..0.25, truncated gradient pass).
One randomly initialised SD1.5-architecture UNet (random weights: mechanics, not
medicine) is built once and sampled with euler, cfg 5, from pure noise. In each cell
(size, batch) every config gets a short warm-up, then ``--repeat`` rounds run every config
once each, in an order rotated per round, so that drift in the machine's speed falls on all
configs alike; a config's time is its median run, its time ratio the median over rounds of
its time over plain's in the same round (the lowest and highest round are reported too).
Peak memory is ``torch.cuda.max_memory_allocated`` over the timed runs on a GPU, the process's peak resident memory sampled every 2 ms on a CPU (weights
included in both). Ratios are against plain sampling of the same cell, measured in the
same invocation. Writes benchmark.csv, benchmark.md, benchmark.png and benchmark.json
to ``--out``; prints the table as it goes. Needs COMFYUI_DIR (scripts/setup_host.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT = "chest x-ray, left pleural effusion"
CONFIGS = ("plain", "gate", "reweight", "correction", "all")
# on request (--configs): the gate on its dense N x N bias, the hard gate (block-sparse, dense), gate + reweight
EXTRA_CONFIGS = ("gate_dense", "hard_gate", "hard_gate_dense", "gate_reweight")
DENSE_ENV = "CXR_ATTENTION_DENSE_BIAS"  # cxr_core/attention/structured_bias.py reads it at every call


class PeakMemory:
    """Peak memory over a block: CUDA allocator peak, or sampled resident memory on the CPU (MiB)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.peak = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            proc = psutil.Process()
            self.peak = proc.memory_info().rss / 2**20

            def sample() -> None:
                while not self._stop.wait(0.002):
                    self.peak = max(self.peak, proc.memory_info().rss / 2**20)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()


def masks(size: int):  # noqa: ANN201
    """Two lungs and a heart as ellipses, and a left-base prior, at ``size`` px.

    A label map, as the demo's masks: the heart ellipse, which overlaps the left lung, keeps only the
    pixels no lung has. (Overlapping organs make the soft gate fall back to its dense N x N bias.)
    """
    import torch

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    right = (((xx + 0.45) / 0.3) ** 2 + (yy / 0.6) ** 2 <= 1).float()  # image left = patient right
    left = (((xx - 0.45) / 0.3) ** 2 + (yy / 0.6) ** 2 <= 1).float()
    heart = (((xx - 0.1) / 0.25) ** 2 + ((yy - 0.3) / 0.2) ** 2 <= 1).float() * (1 - right) * (1 - left)
    return torch.stack([right, left, heart]), (left * (yy > 0.25).float())[None]


def conditioning() -> tuple[list, list]:
    """Seeded positive and negative conditioning (stand-ins for the encoded prompts)."""
    import torch

    g = torch.Generator().manual_seed(0)
    return [[torch.randn(1, 77, 768, generator=g), {}]], [[torch.randn(1, 77, 768, generator=g), {}]]


def patched(model, config: str, size: int, tok):  # noqa: ANN001, ANN201
    """The model as the config's nodes would return it (node defaults)."""
    from cxr_pack.cxr_core.attention.prompt import build_prompt

    prompt = build_prompt(
        tok, TEXT, conditioning()[0][0][0], ["pleural", "effusion"]
    )  # as CXR Prompt gives it
    from cxr_pack.cxr_core.organ_masks import OrganMasks
    from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
    from cxr_pack.nodes.energy_corrector import EnergyLatentCorrector
    from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight

    organ, prior = masks(size)
    if "gate" in config or config == "all":  # gate, gate_dense, hard_gate, hard_gate_dense, gate_reweight
        organs = OrganMasks(("right_lung", "left_lung", "heart"), organ, (size, size))
        model = AnatomyAttentionGate.execute(
            model, organs, organs="all", strength=4.0, hard=config.startswith("hard"), tau=0.5, sites="64,32",
            start_percent=0.0, end_percent=1.0, background="free", enabled=True,
        ).result[0]  # fmt: skip
    if "reweight" in config or config == "all":
        model = PathologyCrossAttnReweight.execute(
            model, prompt, prior, lambda_in=3.0, lambda_out=3.0, start_percent=0.0,
            end_percent=0.4, sites="all", enabled=True,
        ).result[0]  # fmt: skip
    if config in ("correction", "all"):
        model = EnergyLatentCorrector.execute(
            model, prompt, prior, eta=30.0, iterations=1, end_percent=0.25, kappa=0.1,
            energy_threshold=0.0, sites="16", truncate=True, enabled=True,
        ).result[0]  # fmt: skip
    return model


def sampler(
    model, size: int, batch: int, args: argparse.Namespace, cuda: bool, dense: bool
) -> Callable[[int], None]:  # noqa: ANN001
    """A function sampling ``steps`` steps of one cell with one config's model (``dense``: its dense bias)."""
    import comfy.sample
    import torch

    pos, neg = conditioning()
    if args.denoise < 1.0:  # SDEdit from a stand-in for an encoded radiograph, as the example workflow runs
        latent = torch.randn(batch, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(1)) * 0.8
    else:
        latent = torch.zeros(batch, 4, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, 0)

    def go(steps: int) -> None:
        if dense:
            os.environ[DENSE_ENV] = "1"
        try:
            out = comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", pos, neg, latent,
                                      denoise=args.denoise, disable_pbar=True, seed=0)  # fmt: skip
            if cuda:
                torch.cuda.synchronize()
        finally:
            os.environ.pop(DENSE_ENV, None)
        if not torch.isfinite(out).all():
            raise RuntimeError("non-finite output")

    return go


def measure_cell(
    runs: dict[str, Callable[[int], None]], args: argparse.Namespace, cuda: bool
) -> dict[str, dict]:
    """Time every config of one cell in interleaved rounds; per config its median, peak and paired ratio.

    Each config gets a short warm-up (weights on the device, kernels built, a window with at least one
    corrected step). Then ``args.repeat`` rounds each run every config once, the order rotated by one per
    round, so drift in the machine's speed over the cell (clocks, other tenants) falls on all configs alike.
    The time ratio is the median over rounds of the config's time over plain's time in the same round.
    """
    names = list(runs)
    for go in runs.values():
        go(min(args.steps, 4))
    times: dict[str, list[float]] = {c: [] for c in names}
    peaks = dict.fromkeys(names, 0.0)
    for r in range(args.repeat):
        for c in names[r % len(names) :] + names[: r % len(names)]:
            with PeakMemory(cuda) as mem:
                t0 = time.perf_counter()
                runs[c](args.steps)
                times[c].append(time.perf_counter() - t0)
            peaks[c] = max(peaks[c], mem.peak)
    plain = times[names[0]]
    return {
        c: {"seconds": statistics.median(times[c]), "peak": peaks[c], "runs": times[c],
            "ratios": [t / p for t, p in zip(times[c], plain, strict=True)]}
        for c in names
    }  # fmt: skip


def cells(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(size, batch) cells in order: --cells as given, else every --sizes x --batches pair."""
    if args.cells.strip():
        try:
            return [(int(c.split("x")[0]), int(c.split("x")[1])) for c in args.cells.split(",") if c.strip()]
        except (ValueError, IndexError):
            sys.exit(f"--cells: expected SIZExBATCH items like 512x1,1024x4, received {args.cells!r}")
    return [(int(s), int(b)) for s in args.sizes.split(",") for b in args.batches.split(",")]


def start_host(nodes: bool, sdpa: bool = False) -> bool:
    """Put ComfyUI (COMFYUI_DIR) on the path, on the CPU when there is no CUDA, and import the pack.

    Returns whether CUDA is used. Shared by the benchmark scripts and the correction profile. ``sdpa``:
    ComfyUI's PyTorch attention (``--use-pytorch-cross-attention``), the backend it picks on a GPU, also
    on the CPU (whose default is the sub-quadratic one).
    """
    import torch
    from import_pack import NoComfyUI, import_pack, use_comfyui

    cuda = torch.cuda.is_available()
    try:
        use_comfyui(cpu=not cuda)
    except NoComfyUI as e:
        sys.exit(str(e))
    if sdpa:
        import comfy.cli_args

        comfy.cli_args.args.use_pytorch_cross_attention = True  # read when ComfyUI's attention module loads
    import_pack(nodes=nodes)
    return cuda


def environment(cuda: bool) -> dict:
    import comfy.ldm.modules.attention as attention
    import comfy.model_management
    import torch

    dev = comfy.model_management.get_torch_device()
    return {
        "device": torch.cuda.get_device_name(dev)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cpus)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "attention_backend": getattr(
            attention.optimized_attention, "__name__", str(attention.optimized_attention)
        ),
        "python": platform.python_version(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="512,768,1024", help="image sizes in px (latent = size/8)")
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--cells", default="", help="explicit SIZExBATCH cells, e.g. 512x1,1024x4 (overrides "
                    "--sizes/--batches)")  # fmt: skip
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="interleaved rounds per cell (each times every config once); medians count",
    )
    ap.add_argument("--denoise", type=float, default=1.0, help="< 1: SDEdit from a latent, as the example "
                    "workflow (0.6); the windows cover the same steps of the run either way")  # fmt: skip
    ap.add_argument("--channels", type=int, default=320, help="UNet model_channels (320 = SD1.5)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "benchmark")
    ap.add_argument("--smoke", action="store_true", help="CPU smoke size: --channels 32 --sizes 64 --batches 1 "
                    "--steps 2 --repeat 1")  # fmt: skip
    args = ap.parse_args()
    if args.smoke:
        args.channels, args.sizes, args.batches, args.steps, args.repeat = 32, "64", "1", 2, 1
    import torch

    cuda = start_host(nodes=True)
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd1_clip
    from benchmark_report import write_reports
    from cxr_pack.cxr_core.random_models import build_sd15_base_model

    dtype = torch.float16 if cuda else torch.float32
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if configs[0] != "plain" or any(c not in (*CONFIGS, *EXTRA_CONFIGS) for c in configs):
        sys.exit(
            f"--configs: start with plain, then any of {CONFIGS + EXTRA_CONFIGS}; received {args.configs}"
        )
    env = environment(cuda)
    env.update(channels=args.channels, steps=args.steps, repeat=args.repeat, dtype=str(dtype).split(".")[-1],
               denoise=args.denoise)  # fmt: skip
    print(json.dumps(env), flush=True)
    if args.channels != 320:
        print(
            f"NOTE: UNet with model_channels {args.channels}, not SD1.5's 320: smoke figures, not a benchmark."
        )
    dev = comfy.model_management.get_torch_device()
    with torch.inference_mode():
        base = build_sd15_base_model(args.channels, seed=0, dtype=dtype)
        model = comfy.model_patcher.ModelPatcher(base, dev, comfy.model_management.unet_offload_device())
        tok = comfy.sd1_clip.SD1Tokenizer()
        rows: list[dict] = []
        args.out.mkdir(parents=True, exist_ok=True)
        for size, batch in cells(args):
            runs = {
                c: sampler(patched(model, c, size, tok), size, batch, args, cuda, dense=c.endswith("_dense"))
                for c in configs
            }
            measured = measure_cell(runs, args, cuda)
            plain_peak = measured["plain"]["peak"]
            for config, m in measured.items():
                ratios = sorted(m["ratios"])
                row = {"size": size, "batch": batch, "config": config, "seconds": round(m["seconds"], 4),
                       "peak_mib": round(m["peak"], 1), "runs": [round(t, 4) for t in m["runs"]],
                       "time_ratio": round(statistics.median(ratios), 4),
                       "ratio_range": [round(ratios[0], 4), round(ratios[-1], 4)],
                       "mem_ratio": round(m["peak"] / plain_peak, 4)}  # fmt: skip
                rows.append(row)
                print(f"{size:5d} px  batch {batch}  {config:15s} {row['seconds']:9.3f} s  x{row['time_ratio']:.3f} "
                      f"({row['ratio_range'][0]:.3f}-{row['ratio_range'][1]:.3f})  peak {m['peak']:9.0f} MiB  x{row['mem_ratio']:.3f}",
                      flush=True)  # fmt: skip
            write_reports(rows, env, args.out)  # after every cell: a cut-off run keeps what it measured
            del runs
            if cuda:
                torch.cuda.empty_cache()
    print(f"wrote {args.out}/benchmark.{{csv,md,png,json}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
