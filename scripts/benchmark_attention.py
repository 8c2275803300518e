"""The self-attention gate at one site, per attention call: dense bias against its structured forms.

    python scripts/benchmark_attention.py                       # 64x64 and 128x128 sites (512 / 1024 px)
    python scripts/benchmark_attention.py --sides 16 --repeat 1 # CPU smoke size
    python scripts/benchmark_attention.py --sides 64 --heads 10 --head-dim 64   # SDXL's 64x64 level

At an SD1.5 fine site (8 heads x 40 channels by default; SD2.x and SDXL have heads of 64
channels, which the low-rank form's extra channels take past 64; the CFG batch of 2) with the
demo radiograph's organ masks (right lung, left lung, heart, mediastinum), it times
ComfyUI's own attention function (the backend the host chose) on the same q, k, v:

- ``plain``: no bias (dense SDPA, the unregulated call);
- ``soft_dense`` / ``soft_low_rank``: the soft gate as an N x N bias, and folded into
  extra q/k channels (cxr_core/attention/structured_bias.py);
- ``hard_dense`` / ``hard_groups`` / ``hard_low_rank``: the hard gate as an N x N
  -inf mask, block-sparse by organ class, and folded into q/k channels;
- ``overlap_dense`` / ``overlap_rows``: the soft gate on overlapping organs (the heart
  mask widened by 40 px of 1024, so that it lies over the lungs' edges, as in
  projection), as an N x N bias, and as the low-rank form with dense rows for the
  queries whose affinity clips.

Each is timed ``--repeat`` times after a warm-up; the median counts, with ratios to
``plain`` and to the dense form of the same gate. It records the peak memory the
calls take above what is allocated before them (CUDA allocator on a GPU, resident
memory sampled every 2 ms on a CPU: the transient copies a backend makes of the bias
count) and the bytes of the bias itself. Writes attention.csv, attention.md and attention.json to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMS = ("plain", "soft_dense", "soft_low_rank", "hard_dense", "hard_groups", "hard_low_rank", "overlap_dense",
         "overlap_rows")  # fmt: skip
HEADS, DIM = 8, 40  # SD1.5's first transformer level (the defaults of --heads and --head-dim)


def timed(fn, repeat: int, cuda: bool) -> tuple[float, float]:  # noqa: ANN001
    """(median seconds, peak MiB above the start) of ``fn`` after one warm-up call.

    Peak: the CUDA allocator's on a GPU; on a CPU the process's resident memory, sampled every 2 ms.
    """
    import psutil
    import torch
    from benchmark import PeakMemory

    fn()
    if cuda:
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated() / 2**20
    else:
        start = psutil.Process().memory_info().rss / 2**20
    times = []
    with PeakMemory(cuda) as mem:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), max(0.0, mem.peak - start)


def bias_bytes(obj) -> int:  # noqa: ANN001
    """Bytes of the tensors a bias holds (dense tensor, low-rank factors or group indices)."""
    import torch

    if obj is None:
        return 0
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    from cxr_pack.cxr_core.attention.structured_bias import LowRankBias, LowRankRows

    if isinstance(obj, LowRankBias):
        return bias_bytes(obj.u) + bias_bytes(obj.w)
    if isinstance(obj, LowRankRows):
        return bias_bytes(obj.low) + bias_bytes(obj.rows) + bias_bytes(obj.dense)
    return (
        bias_bytes(obj.order)
        + bias_bytes(obj.inverse)
        + sum(  # TokenGroups: index tensors only
            bias_bytes(t) for t in obj.keys if isinstance(t, torch.Tensor)
        )
    )


def run_side(side: int, batch: int, repeat: int, masks, overlapping, dtype, cuda: bool,  # noqa: ANN001
             heads: int = HEADS, dim: int = DIM) -> list[dict]:  # fmt: skip
    import comfy.ldm.modules.attention as attention
    import torch
    from cxr_pack.cxr_core.attention import contributions
    from cxr_pack.cxr_core.attention.contributions import SelfAttentionGate
    from cxr_pack.cxr_core.attention.protocol import SiteCall
    from cxr_pack.cxr_core.attention.structured_bias import structured_attention

    dev = torch.device("cuda" if cuda else "cpu")
    fn = attention.optimized_attention
    n = side * side
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, n, heads * dim, generator=g).to(dev, dtype) for _ in range(3))
    call = SiteCall(("input", 1), "attn1", (side, side), n, n, 1, dev, None, dtype)
    rows: list[dict] = []
    default_form = contributions.HARD_GATE_FORM
    for form in FORMS:
        contributions.HARD_GATE_FORM = "low_rank" if form == "hard_low_rank" else "groups"  # forced: any grid
        chosen = overlapping if form.startswith("overlap") else masks
        gate = SelfAttentionGate(masks=chosen.to(dev), hard=form.startswith("hard"))
        bias = (
            None
            if form == "plain"
            else gate.bias(call).unsqueeze(1)
            if form.endswith("dense")
            else gate.structured(call)
        )
        if form != "plain" and bias is None:
            raise RuntimeError(f"{form}: the gate has no structured form for these masks")

        def go(form: str = form, bias=bias) -> object:  # noqa: ANN001
            if form == "plain" or form.endswith("dense"):
                return fn(q, k, v, heads, mask=bias)
            return structured_attention(q, k, v, heads, bias, fn, items=batch)

        seconds, peak = timed(go, repeat, cuda)
        rows.append({"side": side, "tokens": n, "heads": heads, "head_dim": dim, "batch": batch, "form": form,
                     "seconds": seconds,
                     "peak_mib": round(peak, 1), "bias_mib": round(bias_bytes(bias) / 2**20, 3)})  # fmt: skip
        del bias, go
    contributions.HARD_GATE_FORM = default_form
    plain = rows[0]["seconds"]
    by_form = {r["form"]: r for r in rows}
    for r in rows:
        dense = by_form.get(r["form"].split("_")[0] + "_dense", rows[0])  # plain: itself
        r["vs_plain"] = round(r["seconds"] / plain, 4)
        r["vs_dense_gate"] = round(r["seconds"] / dense["seconds"], 4)
        r["seconds"] = round(r["seconds"], 6)
        print(f"{side:4d}x{side:<4d} {heads}x{dim} batch {batch}  {r['form']:14s} {r['seconds'] * 1e3:10.2f} ms  "
              f"x{r['vs_plain']:.3f} of plain  x{r['vs_dense_gate']:.3f} of the dense gate  "
              f"bias {r['bias_mib']:9.2f} MiB  peak {r['peak_mib']:8.1f} MiB", flush=True)  # fmt: skip
    return rows


def write(rows: list[dict], env: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "attention.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        f"Device: {env['device']}; torch {env['torch']}; attention backend `{env['attention_backend']}`; "
        f"dtype {env['dtype']}; median of {env['repeat']}.",
        "",
        "| site | heads x dim | batch | form | ms | x plain | x dense gate | bias MiB | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['side']}x{r['side']} | {r['heads']}x{r['head_dim']} | {r['batch']} | {r['form']} | {r['seconds'] * 1e3:.2f} | "
                     f"{r['vs_plain']:.3f} | {r['vs_dense_gate']:.3f} | {r['bias_mib']:.2f} | {r['peak_mib']:.1f} |")  # fmt: skip
    (out / "attention.md").write_text("\n".join(lines) + "\n")
    (out / "attention.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", default="64,128", help="site grid sides (64 = a 512-px image's fine sites)")
    ap.add_argument("--batch", type=int, default=2, help="rows per call (2 = one image with CFG)")
    ap.add_argument("--heads", type=int, default=HEADS, help="attention heads (SD1.5's first level: 8)")
    ap.add_argument(
        "--head-dim", type=int, default=DIM, help="channels per head (SD1.5: 40; SD2.x, SDXL: 64)"
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "benchmark")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F
    from benchmark import environment, start_host

    cuda = start_host(nodes=False)
    from cxr_pack.cxr_core.demo_assets import load_demo_organ_masks

    dtype = torch.float16 if cuda else torch.float32
    env = environment(cuda)
    env.update(dtype=str(dtype).split(".")[-1], repeat=args.repeat, heads=args.heads, head_dim=args.head_dim)
    print(json.dumps(env), flush=True)
    om = load_demo_organ_masks()
    m = om.masks.float()
    masks = F.interpolate(m.reshape(1, -1, *m.shape[-2:]), size=(1024, 1024), mode="area")  # (1, K, H, W)
    overlapping = masks.clone()
    heart = list(om.names).index("heart")
    overlapping[:, heart] = F.max_pool2d(masks[:, heart : heart + 1], 81, stride=1, padding=40)[:, 0]
    rows: list[dict] = []
    with torch.inference_mode():
        for side in (int(s) for s in args.sides.split(",") if s.strip()):
            rows += run_side(side, args.batch, args.repeat, masks, overlapping, dtype, cuda, args.heads,
                             args.head_dim)  # fmt: skip
            write(rows, env, args.out)
            if cuda:
                torch.cuda.empty_cache()
    print(f"wrote {args.out}/attention.{{csv,md,json}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
