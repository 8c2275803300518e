"""How often each module makes the host wait for the device, and how many operators it adds, per step.

    python scripts/count_host_reads.py                  # tiny SD1.5-layout UNet, 128 px
    python scripts/count_host_reads.py --configs plain,gate,all

A GPU runs ComfyUI's plain euler step without the host ever waiting: the host queues kernels
while the device runs earlier ones. Reading a device value on the host (``.item()``, ``float(t)``,
``bool(t)``, ``nonzero``, a copy to the CPU) makes it wait, and so does a copy from ordinary host
memory to the device (a Python list made into a device tensor, ``torch.tensor``): CUDA synchronises
the stream first, and where a step is launch-bound (SD1.5
at 512 px on a fast card) each wait costs time the figures of scripts/benchmark.py show only as a
ratio. This script counts them, with the operators dispatched, on any device: a dispatch mode sees
every operator the sampling runs. On a GPU only reads of device tensors count; on the CPU every
read counts, so plain sampling's own (the scheduler computing its sigmas on the host before sampling)
show there too, and the figure to read is the difference to plain. Attention is ComfyUI's PyTorch
SDPA, the backend it picks on a GPU, on the CPU too. Each config samples 4 and 8 steps (euler, CFG 5, node defaults
as in scripts/benchmark.py); the difference, per step, is what one more step costs, so per-run set-up
(caches, checks) drops out. Counts do not depend on the UNet's width, so the default is the tiny
32-channel UNet of the SD1.5 layout (random weights: mechanics, not medicine); the hard gate's
operator count depends on the organ layout at each grid, so on ``--size``.
Writes host_reads.json and host_reads.md to ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# reads of a value on the host; lift_fresh is a tensor made from host data (torch.tensor(list)), which on a
# device is a copy from host memory
READS = {"item", "_local_scalar_dense", "nonzero", "is_nonzero", "equal", "lift_fresh"}
# operators that make no kernel (views, metadata, allocation) are not counted as operators
VIEWS = {
    "view", "_unsafe_view", "t", "transpose", "permute", "expand", "slice", "select", "unsqueeze", "squeeze",
    "as_strided", "detach", "alias", "reshape", "_reshape_alias", "split", "chunk", "unbind", "split_with_sizes",
    "narrow", "lift_fresh", "view_as", "empty", "empty_like", "set_", "empty_strided",
}  # fmt: skip


def counter(cuda: bool):  # noqa: ANN201
    """A dispatch mode counting host reads (on a GPU: of device tensors only) and operators."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.reads = 0
            self.ops: collections.Counter = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            kwargs = kwargs or {}
            name = func.__name__.split(".")[0]
            if (name in READS and (not cuda or _on_device(args))) or _crosses_host(name, args, kwargs):
                self.reads += 1
            if name not in VIEWS:
                self.ops[name] += 1
            return func(*args, **kwargs)

    return Count()


def _on_device(args: tuple) -> bool:
    return bool(args) and getattr(getattr(args[0], "device", None), "type", "cpu") != "cpu"


def _crosses_host(name: str, args: tuple, kwargs: dict) -> bool:
    """A copy between host memory and a device, either way (never on a CPU-only run)."""
    if name == "_to_copy" and args:
        src, dst = getattr(args[0], "device", None), kwargs.get("device")
    elif name == "copy_" and len(args) > 1:
        src, dst = getattr(args[1], "device", None), getattr(args[0], "device", None)
    else:
        return False
    if src is None or dst is None:
        return False
    return (torch_device(src).type == "cpu") != (torch_device(dst).type == "cpu")


def torch_device(d: object):  # noqa: ANN201
    import torch

    return d if isinstance(d, torch.device) else torch.device(str(d))


def per_step(model, size: int, cuda: bool) -> tuple[float, float]:  # noqa: ANN001
    """(host reads, operators) that one more euler step adds."""
    import comfy.sample
    import torch
    from benchmark import conditioning

    pos, neg = conditioning()
    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, 0)
    counts = {}

    def go(steps: int) -> None:
        comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", pos, neg, latent, disable_pbar=True,
                            seed=0)  # fmt: skip

    for steps in (4, 8):
        go(steps)  # warm: per-run caches, weights on the device
        with counter(cuda) as c:
            go(steps)
        counts[steps] = (c.reads, sum(c.ops.values()))
    return (counts[8][0] - counts[4][0]) / 4, (counts[8][1] - counts[4][1]) / 4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument(
        "--channels", type=int, default=32, help="UNet model_channels (counts do not depend on it)"
    )
    ap.add_argument("--configs", default="plain,gate,hard_gate,reweight,gate_reweight,correction,all")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "host_reads")
    args = ap.parse_args()
    import torch
    from benchmark import EXTRA_CONFIGS, environment, patched, start_host

    cuda = start_host(nodes=True, sdpa=True)
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd1_clip
    from cxr_pack.cxr_core.random_models import build_sd15_base_model

    env = environment(cuda)
    env.update(size=args.size, channels=args.channels)
    print(json.dumps(env), flush=True)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not configs or configs[0] != "plain" or any(c not in ("plain", "gate", "reweight", "correction", "all",
                                                           *EXTRA_CONFIGS) for c in configs):  # fmt: skip
        raise SystemExit(
            f"--configs: start with plain, then configs of scripts/benchmark.py; received {args.configs}"
        )
    dev = comfy.model_management.get_torch_device()
    rows = []
    with torch.inference_mode():
        base = build_sd15_base_model(args.channels, seed=0, dtype=torch.float16 if cuda else torch.float32)
        model = comfy.model_patcher.ModelPatcher(base, dev, comfy.model_management.unet_offload_device())
        tok = comfy.sd1_clip.SD1Tokenizer()
        for config in configs:
            reads, ops = per_step(patched(model, config, args.size, tok), args.size, cuda)
            plain = rows[0] if rows else {"ops_per_step": ops, "host_reads_per_step": reads}
            rows.append({"config": config, "host_reads_per_step": reads, "ops_per_step": ops,
                         "reads_added": reads - plain["host_reads_per_step"],
                         "ops_ratio": round(ops / plain["ops_per_step"], 4)})  # fmt: skip
            print(f"{config:15s} host reads per step {reads:6.2f} (+{rows[-1]['reads_added']:.2f} to plain)   "
                  f"operators per step {ops:8.1f}  x{rows[-1]['ops_ratio']:.3f}", flush=True)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "host_reads.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    lines = [
        f"Device: {env['device']}; torch {env['torch']}; attention {env['attention_backend']}; {args.size} px, "
        f"UNet width {args.channels}; per euler step (8-step run minus 4-step run, / 4).",
        "",
        "| config | host reads per step | added to plain | operators per step | operators / plain |",
        "|---|---|---|---|---|",
        *(f"| {r['config']} | {r['host_reads_per_step']:g} | {r['reads_added']:g} | {r['ops_per_step']:g} | "
          f"{r['ops_ratio']:.3f} |" for r in rows),
    ]  # fmt: skip
    (args.out / "host_reads.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}/host_reads.{{json,md}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
