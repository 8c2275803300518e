"""Where the latent correction's time goes: its gradient pass split into parts, in plain-step units.

    python scripts/profile_correction.py                         # 512 px, 30 steps (GPU)
    python scripts/profile_correction.py --size 256 --steps 8    # CPU size

On the benchmark's random SD1.5 UNet (random weights: mechanics, not medicine), it
samples plain and with the EnergyLatentCorrector alone (node defaults: coarse sites,
window 0..0.25, one iteration), truncated and untruncated, and times each gradient pass
in parts, synchronising the device around each: the weight swap that makes the
inference-mode weights usable by autograd, the forward pass with the energy, and the
backward pass. The pass is then expressed in plain sampling steps (one CFG model call),
and the time ratio it predicts, ``1 + passes x pass / plain run``, is printed beside the
ratio measured in the same invocation, so what to make lighter is read off, not guessed.
Then it profiles, with torch.profiler (scripts/op_profile.py), one plain CFG step, one
truncated gradient pass and that pass's backward alone: wall time, the device's kernel time and
busy share (on a GPU), kernels and operators, and the operators that take the most, so a pass
that costs more plain steps than its operators explain shows whether the host or the device is
the limit. Writes profile.json and profile.md to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from op_profile import Stretch, markdown, nth_call_profiled

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """Wall time of named parts, the device synchronised at both ends of each."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.parts: dict[str, list[float]] = {}

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        self.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.parts.setdefault(name, []).append(time.perf_counter() - t0)


@contextlib.contextmanager
def instrumented(clock: Clock) -> Iterator[None]:
    """Time the corrector's gradient pass, its weight swap and its backward pass (restored afterwards)."""
    import torch
    from cxr_pack.cxr_core.attention import correction

    orig_pass = correction.LatentCorrector.energy_and_grad
    orig_swap = correction.autograd_compatible_weights
    orig_grad = torch.autograd.grad

    def timed_pass(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        with clock.part("pass"):
            return orig_pass(self, *a, **kw)

    @contextlib.contextmanager
    def timed_swap(module, cache=None):  # noqa: ANN001, ANN202
        clock.sync()
        t0 = time.perf_counter()
        with orig_swap(module, cache) as n:
            clock.parts.setdefault("swap", []).append(time.perf_counter() - t0)
            yield n
            clock.sync()
            t1 = time.perf_counter()
        clock.parts["swap"][-1] += time.perf_counter() - t1

    def timed_grad(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        with clock.part("backward"):
            return orig_grad(*a, **kw)

    correction.LatentCorrector.energy_and_grad = timed_pass
    correction.autograd_compatible_weights = timed_swap
    torch.autograd.grad = timed_grad
    try:
        yield
    finally:
        correction.LatentCorrector.energy_and_grad = orig_pass
        correction.autograd_compatible_weights = orig_swap
        torch.autograd.grad = orig_grad


def corrector(model, size: int, truncate: bool, tok):  # noqa: ANN001, ANN201
    from benchmark import TEXT, conditioning, masks
    from cxr_pack.cxr_core.attention.prompt import build_prompt
    from cxr_pack.nodes.energy_corrector import EnergyLatentCorrector

    prompt = build_prompt(tok, TEXT, conditioning()[0][0][0], ["pleural", "effusion"])
    return EnergyLatentCorrector.execute(
        model, prompt, masks(size)[1], eta=30.0, iterations=1, end_percent=0.25, kappa=0.1,
        energy_threshold=0.0, sites="coarse", truncate=truncate, enabled=True,
    ).result[0]  # fmt: skip


def run(model, args: argparse.Namespace, cuda: bool) -> Callable[[], float]:  # noqa: ANN001
    import comfy.sample
    import torch
    from benchmark import conditioning

    pos, neg = conditioning()
    latent = torch.zeros(1, 4, args.size // 8, args.size // 8)
    noise = comfy.sample.prepare_noise(latent, 0)

    def go() -> float:
        t0 = time.perf_counter()
        comfy.sample.sample(model, noise, args.steps, 5.0, "euler", "normal", pos, neg, latent,
                            disable_pbar=True, seed=0)  # fmt: skip
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return go


def or_reason(profile: Callable[[], list[str]], result: dict) -> list[str]:
    """The operator profile's lines, or one line saying why it failed (on a GPU the profiler needs CUPTI):
    the timings measured before it are kept either way."""
    try:
        return profile()
    except Exception as exc:
        result["operators_error"] = f"{type(exc).__name__}: {exc}"
        print(f"operator profile failed: {result['operators_error']}", flush=True)
        return [f"Operator profile failed: {result['operators_error']}"]


def operator_profile(plain, corrected, args: argparse.Namespace, cuda: bool, result: dict) -> list[str]:  # noqa: ANN001
    """Profile one plain CFG step, one gradient pass and its backward; record and return the tables.

    Each is one call, the n-th of its kind in a run (not the first: that one builds per-run caches), so the
    profile stays small enough to read back quickly on a GPU.
    """
    import comfy.samplers
    import torch
    from cxr_pack.cxr_core.attention import correction

    passes = result["configs"]["truncated"]["passes_per_run"]
    index = 1 if passes > 1 else 0
    step = Stretch(f"plain CFG step {min(2, args.steps - 1)}")
    whole = Stretch(f"gradient pass {index} (truncated)")
    backward = Stretch(f"its backward (pass {index})")
    with nth_call_profiled(comfy.samplers, "sampling_function", min(2, args.steps - 1), step, cuda):
        run(plain, args, cuda)()
    with nth_call_profiled(correction.LatentCorrector, "energy_and_grad", index, whole, cuda):
        run(corrected, args, cuda)()
    with nth_call_profiled(torch.autograd, "grad", index, backward, cuda):
        run(corrected, args, cuda)()
    result["operators"] = {s.name: {**s.summary(), "top": s.top} for s in (step, whole, backward)}
    table = markdown([step, whole, backward], cuda)
    print("\n".join(table[:5]), flush=True)
    return ["Operator profile (torch.profiler; its overhead is in every row alike):", "", *table]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per configuration; the median counts")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "profile_correction")
    args = ap.parse_args()
    import torch
    from benchmark import environment, start_host

    cuda = start_host(nodes=True)
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd1_clip
    from cxr_pack.cxr_core.random_models import build_sd15_base_model

    env = environment(cuda)
    env.update(size=args.size, steps=args.steps, repeat=args.repeat)
    print(json.dumps(env), flush=True)
    dev = comfy.model_management.get_torch_device()
    result: dict = {"environment": env, "configs": {}}
    with torch.inference_mode():
        base = build_sd15_base_model(320, seed=0, dtype=torch.float16 if cuda else torch.float32)
        plain = comfy.model_patcher.ModelPatcher(base, dev, comfy.model_management.unet_offload_device())
        tok = comfy.sd1_clip.SD1Tokenizer()
        go = run(plain, args, cuda)
        go()  # warm-up: weights on the device, kernels chosen
        plain_s = statistics.median(go() for _ in range(args.repeat))
        step_s = plain_s / args.steps
        lines = [f"plain: {plain_s:.3f} s for {args.steps} steps, {step_s * 1e3:.1f} ms per step"]
        for truncate in (True, False):
            name = "truncated" if truncate else "untruncated"
            go = run(corrector(plain, args.size, truncate, tok), args, cuda)
            go()
            clock = Clock(cuda)
            with instrumented(clock):
                total = statistics.median(go() for _ in range(args.repeat))
            passes = len(clock.parts.get("pass", [])) // args.repeat
            med = {k: statistics.median(v) for k, v in clock.parts.items()}
            forward = med["pass"] - med["backward"] - med["swap"]
            row = {
                "seconds": round(total, 4), "time_ratio": round(total / plain_s, 4), "passes_per_run": passes,
                "pass_ms": round(med["pass"] * 1e3, 2), "swap_ms": round(med["swap"] * 1e3, 2),
                "forward_and_energy_ms": round(forward * 1e3, 2), "backward_ms": round(med["backward"] * 1e3, 2),
                "pass_in_plain_steps": round(med["pass"] / step_s, 3),
                "predicted_ratio": round(1 + passes * med["pass"] / plain_s, 4),
            }  # fmt: skip
            result["configs"][name] = row
            lines.append(
                f"{name}: {total:.3f} s (x{row['time_ratio']:.3f}; predicted from the passes x{row['predicted_ratio']:.3f}); "
                f"{passes} passes of {row['pass_ms']:.1f} ms = {row['pass_in_plain_steps']:.2f} plain steps each: "
                f"weight swap {row['swap_ms']:.1f} ms, forward + energy {row['forward_and_energy_ms']:.1f} ms, "
                f"backward {row['backward_ms']:.1f} ms"
            )
            print(lines[-1], flush=True)
        lines = [f"- {x}" for x in lines]
        corrected = corrector(plain, args.size, True, tok)
        lines += ["", *or_reason(lambda: operator_profile(plain, corrected, args, cuda, result), result)]
    result["plain_seconds"] = round(plain_s, 4)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(result, indent=1))
    header = f"Device: {env['device']}; torch {env['torch']}; {args.size} px, {args.steps} steps, median of {args.repeat}."
    (args.out / "profile.md").write_text(header + "\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {args.out}/profile.{{json,md}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
