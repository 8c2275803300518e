"""Windows in time: which steps of a sampling run a module acts on (docs/METHOD.md, "Windows").

A module's window is given as progress ``start..end`` in [0, 1]. With the
default schedule ``run``, progress is a fraction of *this sampling call's own*
steps: with sigmas s_0 > s_1 > ... > s_n (n steps), step i has progress
i / (n - 1), so 0 is the first step the sampler takes (for an SDEdit edit at
denoise 0.6, the noisiest step of the edit, not the model's sigma_max) and 1 is
its last. A split run (KSamplerAdvanced start/end steps, SamplerCustom with any
sigmas) counts the steps of the call. With the schedule ``model``, progress is
ComfyUI's convention instead: converted once with the model's
``percent_to_sigma`` (a fraction of the model's full noise schedule), and the
window holds the steps whose sigma lies in that range.

A model evaluation at sigma belongs to step ``max{i : s_i >= sigma}`` (the
second evaluation of a second-order step counts with the step it lands on);
the module acts on the evaluations whose step is in the window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

SCHEDULES = ("run", "model")
_REL = 1e-5  # relative tolerance when matching a model call's sigma to the run's sigmas


@dataclass(frozen=True)
class Window:
    """A progress window, start..end in [0, 1], on the run's steps or on the model's schedule."""

    start: float = 0.0
    end: float = 1.0
    schedule: str = "run"
    sigma_start: float = math.inf  # schedule "model" only: percent_to_sigma(start), converted once
    sigma_end: float = 0.0  # schedule "model" only: percent_to_sigma(end)

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(
                f"start_percent/end_percent: expected 0 <= start <= end <= 1, received {self.start}, {self.end}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"window schedule: expected one of {SCHEDULES}, received {self.schedule!r}")

    def describe(self) -> str:
        what = "of the run's steps" if self.schedule == "run" else "of the model's noise schedule"
        return f"progress {self.start:g}..{self.end:g} {what}"


def model_window(model_patcher: object, start: float, end: float, schedule: str = "run") -> Window:
    """A Window for a node's inputs; schedule "model" converts to sigma once with the model's schedule."""
    w = Window(float(start), float(end), schedule)
    if schedule == "run":
        return w
    ms = model_patcher.get_model_object("model_sampling")  # type: ignore[attr-defined]
    return Window(
        w.start, w.end, "model", float(ms.percent_to_sigma(w.start)), float(ms.percent_to_sigma(w.end))
    )


class RunSchedule:
    """The sigmas of one sampling call and the step arithmetic on them."""

    def __init__(self, sigmas: torch.Tensor | Sequence[float]) -> None:
        s = (
            sigmas.detach().double().cpu().flatten().tolist()
            if isinstance(sigmas, torch.Tensor)
            else list(sigmas)
        )
        self.sigmas: tuple[float, ...] = tuple(float(x) for x in s)
        self.n_steps = max(0, len(self.sigmas) - 1)
        self._steps: dict[Window, tuple[int, ...]] = {}
        self._step_of: dict[float, int] = {}  # sigma -> step: asked at every attention call of a step

    def progress(self, i: int) -> float:
        return i / (self.n_steps - 1) if self.n_steps > 1 else 0.0

    def step_of(self, sigma: float) -> int:
        """The step a model evaluation at ``sigma`` belongs to (0 for sigmas at or above s_0)."""
        if sigma not in self._step_of:
            i = 0
            for j in range(self.n_steps):
                if self.sigmas[j] >= sigma * (1.0 - _REL):
                    i = j
                else:
                    break
            self._step_of[sigma] = i
        return self._step_of[sigma]

    def window_steps(self, window: Window) -> tuple[int, ...]:
        """Indices of the run's steps inside ``window`` (cached per window)."""
        if window not in self._steps:
            if window.schedule == "run":
                eps = 1e-9
                steps = [
                    i
                    for i in range(self.n_steps)
                    if window.start - eps <= self.progress(i) <= window.end + eps
                ]
            else:
                lo, hi = window.sigma_end * (1.0 - _REL), window.sigma_start * (1.0 + _REL)
                steps = [i for i in range(self.n_steps) if lo <= self.sigmas[i] <= hi]
            self._steps[window] = tuple(steps)
        return self._steps[window]

    def active(self, window: Window, sigma: float) -> bool:
        """Whether a model evaluation at ``sigma`` falls in ``window``."""
        if window.schedule == "model":
            return window.sigma_end * (1.0 - _REL) <= sigma <= window.sigma_start * (1.0 + _REL)
        steps = self.window_steps(window)
        return bool(steps) and steps[0] <= self.step_of(sigma) <= steps[-1]

    def describe(self) -> str:
        if not self.n_steps:
            return "a run with no steps"
        return f"{self.n_steps} step(s), sigma {self.sigmas[0]:.4g} -> {self.sigmas[-1]:.4g}"


def window_active(window: Window, sigma: float, schedule: RunSchedule | None) -> bool:
    """Whether a model evaluation at sigma is in window; outside a sampling run only a model window can say no."""
    if schedule is not None:
        return schedule.active(window, sigma)
    return window.schedule != "model" or window.sigma_end <= sigma <= window.sigma_start


class EmptyWindowError(ValueError):
    """An enabled module whose window holds no step of the run."""


def require_steps(schedule: RunSchedule, window: Window, node: str) -> tuple[int, ...]:
    """The window's steps in this run, or a clear error naming the node, its window and the run."""
    steps = schedule.window_steps(window)
    if schedule.n_steps and not steps:
        hint = (
            "widen start_percent..end_percent"
            if window.schedule == "run"
            else "set window_schedule to 'run' (progress of this run's own steps) or widen the window"
        )
        raise EmptyWindowError(
            f"{node}: its window ({window.describe()}) contains no step of this sampling run "
            f"({schedule.describe()}), so the module would do nothing; {hint}, or bypass the node"
        )
    return steps


def format_steps(steps: Sequence[int]) -> str:
    """'0-4, 7' for [0, 1, 2, 3, 4, 7]."""
    out: list[str] = []
    s = sorted(set(steps))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        out.append(str(s[i]) if i == j else f"{s[i]}-{s[j]}")
        i = j + 1
    return ", ".join(out) or "none"
