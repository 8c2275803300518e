"""Record cross-attention maps of chosen words (the machinery behind AttentionMapCapture).

A :class:`CrossAttentionCapture` is an engine contribution with no bias: at
its sites it recomputes the cond branch's attention probabilities for the
chosen token columns, averages them over heads, and adds them to the run's
buffer (RunState.captures), keyed by word and step, on the model's device
(copying each map to the CPU as it is made would stall a GPU at every call). When the run ends the
buffer is published to the :class:`AttentionMapStore` the node returned, which
keeps only the latest run's maps, on the CPU. Without the node nothing is
recorded and nothing is computed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .measures import attention_probs
from .prompt import RegulatedPrompt, site_columns
from .protocol import SiteCall
from .schedule import Window


class AttentionMapStore:
    """Maps of the latest finished run: {word: {step: (B, h, w) mean over recorded sites}}."""

    def __init__(self, words: tuple[str, ...]) -> None:
        self.words = words
        self._lock = threading.Lock()
        self._maps: dict[str, dict[int, torch.Tensor]] = {}
        self.total_steps = 0

    def publish(self, maps: dict[str, dict[int, torch.Tensor]], total_steps: int) -> None:
        with self._lock:
            self._maps = maps
            self.total_steps = total_steps

    def maps(self) -> dict[str, dict[int, torch.Tensor]]:
        with self._lock:
            return {w: dict(s) for w, s in self._maps.items()}

    def __deepcopy__(self, memo: dict) -> AttentionMapStore:
        return self


@dataclass
class _RunBuffer:
    store: AttentionMapStore
    sums: dict = field(default_factory=dict)  # (word, step) -> [sum (B, h, w), count]
    total_steps: int = 0

    def add(self, word: str, step: int, m: torch.Tensor) -> None:
        key = (word, step)
        if key in self.sums and self.sums[key][0].shape == m.shape:
            self.sums[key][0] += m
            self.sums[key][1] += 1
        elif key not in self.sums:
            self.sums[key] = [m.clone(), 1]
        # maps of another grid size are resampled to the first one seen
        else:
            ref = self.sums[key][0]
            self.sums[key][0] += torch.nn.functional.interpolate(
                m[:, None], size=ref.shape[-2:], mode="bilinear"
            )[:, 0]
            self.sums[key][1] += 1

    def publish(self) -> None:
        out: dict[str, dict[int, torch.Tensor]] = {}
        for (word, step), (s, n) in sorted(self.sums.items(), key=lambda kv: kv[0][1]):
            out.setdefault(word, {})[step] = (s / n).cpu()
        self.store.publish(out, self.total_steps)


@dataclass(frozen=True, eq=False)
class CrossAttentionCapture:
    """Observer contribution: record word maps (cond branch, mean over heads) at its sites and steps."""

    words: dict[str, tuple[int, ...]]  # word -> token positions
    prompt_len: int
    store: AttentionMapStore
    steps: frozenset[int] | None = None  # None = every step
    window: Window = field(default_factory=Window)
    kind: str = "attn2"
    cond_only: bool = True
    prompt: RegulatedPrompt | None = None  # the prompt the positions come from (checked against the sampler)

    role: ClassVar[str] = "observe"
    label: ClassVar[str] = "AttentionMapCapture"

    def observe(self, call: SiteCall, q, k, v, bias, extra_options: dict) -> None:  # noqa: ANN001
        from .engine import RUN_STATE_KEY, current_sigma

        run = extra_options.get(RUN_STATE_KEY)
        if run is None or run.schedule is None:
            return
        step, total = run.schedule.step_of(current_sigma(extra_options)), run.schedule.n_steps
        if self.steps is not None and step not in self.steps:
            return
        chunks = list(extra_options.get("cond_or_uncond") or [0])
        if 0 not in chunks:
            return
        i = chunks.index(0)
        rows = slice(i * call.batch, (i + 1) * call.batch)
        b = None
        if bias is not None:
            b = bias[rows] if bias.shape[0] > 1 else bias
        with torch.no_grad():
            probs = attention_probs(q[rows], k[rows], extra_options["n_heads"], b)  # (B, H, Nq, Nk)
            buf = run.captures.setdefault(id(self), _RunBuffer(self.store))
            buf.total_steps = total
            for word, pos in self.words.items():
                cols = site_columns(call, pos, self.prompt_len, "AttentionMapCapture")
                m = probs[..., cols].sum(-1).mean(1)  # (B, Nq)
                buf.add(word, step, m.reshape(m.shape[0], *call.hw).float())  # to the CPU at publish
