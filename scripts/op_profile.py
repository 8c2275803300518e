"""Where a stretch of sampling spends its time, operator by operator (torch.profiler).

Used by scripts/profile_correction.py to compare one gradient pass of the corrector with plain
sampling steps: host wall time, the device's kernel time inside it (on a GPU), how many kernels
and operators it runs, and the operators that take the most. A stretch whose device is busy for
most of its wall time pays for arithmetic; one whose device idles pays for the host (Python,
dispatch, kernel launches, waits). Both figures come from the same profiled run, so the profiler's
own overhead is in each alike; compare ratios, not absolute times.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock


@dataclass
class Stretch:
    """One profiled stretch of sampling: one call (a CFG step, a gradient pass, a backward)."""

    name: str
    wall_s: float = 0.0
    profile: Any = None  # torch.profiler.profile, once the stretch has run
    top: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """Wall ms, device kernel ms, busy share, kernels and aten operators."""
        events = self.profile.events() if self.profile is not None else []
        device = [e for e in events if _on_device(e)]
        aten = sum(1 for e in events if not _on_device(e) and e.name.startswith("aten::"))
        busy_us = sum(e.time_range.elapsed_us() for e in device)
        wall_ms = self.wall_s * 1e3
        return {
            "name": self.name,
            "wall_ms": round(wall_ms, 3),
            "device_ms": round(busy_us / 1e3, 3) if device else None,
            "device_busy": round(busy_us / 1e3 / wall_ms, 4) if device and wall_ms else None,
            "kernels": len(device) if device else None,
            "aten_ops": aten,
            "host_us_per_op": round(wall_ms * 1e3 / aten, 2) if aten else None,
        }


def _on_device(event: Any) -> bool:
    kind = str(getattr(event, "device_type", "")).rsplit(".", 1)[-1]
    return kind not in ("CPU", "") and not getattr(event, "is_user_annotation", False)


@contextlib.contextmanager
def profiled(stretch: Stretch, cuda: bool) -> Iterator[Stretch]:
    """Profile the block (CPU ops, and CUDA kernels on a GPU), the device synchronised at both ends."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        yield stretch
        if cuda:
            torch.cuda.synchronize()
        stretch.wall_s = time.perf_counter() - t0
    stretch.profile = prof
    stretch.top = top_ops(prof, cuda)


@contextlib.contextmanager
def nth_call_profiled(owner: Any, attr: str, index: int, stretch: Stretch, cuda: bool) -> Iterator[Stretch]:
    """Within the block, the ``index``-th call (from 0) of ``owner.attr`` runs profiled into ``stretch``."""
    original = getattr(owner, attr)
    calls = [0]

    def call(*a: Any, **kw: Any) -> Any:
        calls[0] += 1
        if calls[0] - 1 != index:
            return original(*a, **kw)
        with profiled(stretch, cuda):
            return original(*a, **kw)

    with mock.patch.object(owner, attr, call):
        yield stretch
    if stretch.profile is None:
        raise RuntimeError(
            f"{owner.__name__}.{attr} was called {calls[0]} times; call {index} was to be profiled"
        )


def top_ops(prof: Any, cuda: bool, n: int = 12) -> list[dict]:
    """The aten operators that take the most: by self device time on a GPU, self host time on a CPU."""
    rows = []
    for avg in prof.key_averages():
        if not avg.key.startswith("aten::"):
            continue
        rows.append(
            {
                "op": avg.key,
                "calls": avg.count,
                "self_host_ms": round(avg.self_cpu_time_total / 1e3, 3),
                "self_device_ms": round(getattr(avg, "self_device_time_total", 0) / 1e3, 3) if cuda else None,
            }
        )
    rows.sort(key=lambda r: r["self_device_ms"] if cuda else r["self_host_ms"], reverse=True)
    return rows[:n]


def markdown(stretches: list[Stretch], cuda: bool) -> list[str]:
    """A comparison table of the stretches, then each one's top operators."""
    lines = [
        "| stretch | wall ms | device kernel ms | device busy | kernels | aten ops | host us per op |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in stretches:
        r = s.summary()
        lines.append(
            f"| {r['name']} | {r['wall_ms']} | {_or_dash(r['device_ms'])} | {_or_dash(r['device_busy'])} | "
            f"{_or_dash(r['kernels'])} | {r['aten_ops']} | {_or_dash(r['host_us_per_op'])} |"
        )
    by = "self device ms" if cuda else "self host ms"
    for s in stretches:
        lines += ["", f"Top operators of {s.name}, by {by}:", "", "| op | calls | self host ms | self device ms |",
                  "|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {r['op']} | {r['calls']} | {r['self_host_ms']} | {_or_dash(r['self_device_ms'])} |"
            for r in s.top
        ]
    return lines


def _or_dash(x: object) -> str:
    return "-" if x is None else str(x)
