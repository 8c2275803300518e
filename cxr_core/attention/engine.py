"""One attention replace per site that gathers every active contribution.

``install`` puts a :class:`RegulatedAttention` on each chosen site of a
(cloned) ModelPatcher. A second node adds its contribution to the same object
(a new immutable object, so earlier clones are untouched); a replace that
another node or pack registered first is wrapped, not overwritten.

Per call: contributions outside their window (schedule.py: progress of the
run's own steps, resolved against the sigmas of the sampling call) cost
nothing; the active ones are summed into one compact bias (B, 1, Nq, Nk), broadcast over heads,
cast to q's dtype, and passed to ComfyUI's ``optimized_attention``. Where one contribution is
active alone, nothing observes the call and the backend computes exact dot products, its
structured form (structured_bias.py: low rank or block-sparse) replaces the dense bias. Cond-only
contributions bias only the chunks that ``cond_or_uncond`` marks as cond.
Per-run caches live in the run's own transformer_options (RunState) and die
with the run. At the start of each sampling call every installed contribution's
window is checked against the call's steps (an enabled module that would act on
no step is an error) and its prompt against the sampler's conditioning
(prompt.py); at its end one log line says which steps each module acted on.
What the engine asks of a contribution is protocol.py; the host's
transformer_options and attn_precision reach every attention call it makes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .prompt import check_sampled_prompt
from .protocol import BiasContribution, Contribution, ObserveContribution, SiteCall, require_contribution
from .schedule import RunSchedule, format_steps, require_steps, window_active
from .site_masks import latent_site_hw, match_batch
from .sites import SiteKey
from .structured_bias import StructuredBias, structured_allowed, structured_attention

log = logging.getLogger("cxr_counterfactual.attention")

RUN_STATE_KEY = "cxr_run"
WRAPPER_KEY = "cxr_counterfactual.run_state"


@dataclass
class Activity:
    """What one module did in one run: the steps it acted on and how many attention calls it biased."""

    steps: set[int] = field(default_factory=set)
    calls: int = 0


@dataclass
class RunState:
    """State that lives for one sampling run only (its schedule, per-grid bias cache, captures, activity)."""

    schedule: RunSchedule | None = None
    cache: dict = field(default_factory=dict)
    captures: dict = field(default_factory=dict)  # capture key -> buffer with .publish()
    activity: dict[str, Activity] = field(default_factory=dict)  # module label -> Activity
    sigma: tuple[torch.Tensor, float] | None = None  # the latest model call's sigmas tensor and its value

    def record(self, label: str, step: int, calls: int = 1) -> None:
        a = self.activity.setdefault(label, Activity())
        a.steps.add(step)
        a.calls += calls


def current_sigma(extra_options: dict) -> float:
    """The sigma of the model call this attention call belongs to, read once per model call.

    Reading a device tensor's value waits for the device (a host-device synchronisation): done at
    every attention call, it stalls a GPU whose plain sampling never waits within a step. Every
    attention call of one model call sees the same ``sigmas`` tensor, so the run keeps that tensor
    (the reference also keeps its identity unique) with its value, and only a new tensor is read.
    """
    sig = extra_options.get("sigmas")
    if sig is None:
        return float("inf")
    if not isinstance(sig, torch.Tensor):
        return float(sig)
    run = extra_options.get(RUN_STATE_KEY)
    if run is not None and run.sigma is not None and run.sigma[0] is sig:
        return run.sigma[1]
    value = float(sig.max())
    if run is not None:
        run.sigma = (sig, value)
    return value


def _attention() -> Any:
    import comfy.ldm.modules.attention as attention  # the host's module, looked up at call time

    return attention


class RegulatedAttention:
    """An attn1/attn2 replace patch holding a tuple of contributions (immutable)."""

    def __init__(
        self,
        site: SiteKey,
        kind: str,
        contributions: Sequence[Contribution] = (),
        inner: Callable | None = None,
    ):
        self.site = site
        self.kind = kind
        self.contributions: tuple[Contribution, ...] = tuple(contributions)  # checked once, at install
        self.inner = inner

    def with_contribution(self, contribution: Contribution) -> RegulatedAttention:
        return RegulatedAttention(self.site, self.kind, (*self.contributions, contribution), self.inner)

    def __deepcopy__(self, memo: dict) -> RegulatedAttention:
        return self  # immutable: clones share it instead of copying the masks it holds

    def __repr__(self) -> str:
        names = ", ".join(type(c).__name__ for c in self.contributions)
        return f"RegulatedAttention({self.kind} {self.site[0]}{self.site[1]}: {names}; inner={self.inner is not None})"

    def _plain(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        if self.inner is not None:
            return self.inner(q, k, v, extra_options)
        return _attention().optimized_attention(
            q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
            transformer_options=extra_options,
        )  # fmt: skip

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict
    ) -> torch.Tensor:
        sigma = current_sigma(extra_options)
        run = extra_options.get(RUN_STATE_KEY)
        schedule = run.schedule if run is not None else None
        active = [c for c in self.contributions if window_active(c.window, sigma, schedule)]
        if not active:
            return self._plain(q, k, v, extra_options)
        if schedule is not None:
            step = schedule.step_of(sigma)
            for c in active:
                if c.label:
                    run.record(c.label, step)
        call = SiteCall(
            site=self.site, kind=self.kind, hw=latent_site_hw(extra_options), n_q=q.shape[1], n_k=k.shape[1],
            batch=q.shape[0] // max(1, len(extra_options.get("cond_or_uncond") or [0])), device=q.device,
            cache=run.cache if run is not None else None, dtype=q.dtype,
        )  # fmt: skip
        biasers: list[BiasContribution] = [c for c in active if c.role == "bias"]  # type: ignore[misc]
        observers: list[ObserveContribution] = [c for c in active if c.role == "observe"]  # type: ignore[misc]
        attention = _attention()
        heads = extra_options["n_heads"]
        # the host's precision setting and attention overrides (transformer_options) apply to biased calls too
        options = dict(attn_precision=extra_options.get("attn_precision"), transformer_options=extra_options)
        compact = self._structured(biasers, observers, call, attention.optimized_attention, extra_options)
        if compact is not None:
            out = structured_attention(
                q, k, v, heads, compact, attention.optimized_attention, call.batch, **options
            )
        else:
            bias = self._cached_bias(biasers, call, extra_options, q) if biasers else None
            for c in observers:
                c.observe(call, q, k, v, bias, extra_options)
            if bias is None:
                return self._plain(q, k, v, extra_options)
            out = attention.optimized_attention(q, k, v, heads, mask=bias, **options)
        if self.inner is not None:
            # compose: the other replace's output plus the change our bias makes to plain attention
            out = self.inner(q, k, v, extra_options) + (
                out - attention.optimized_attention(q, k, v, heads, **options)
            )
        return out

    @staticmethod
    def _structured(
        biasers: list[BiasContribution], observers: list[ObserveContribution], call: SiteCall,
        attention_fn: Callable, extra_options: dict,
    ) -> StructuredBias | None:  # fmt: skip
        """The one active bias in compact form, where that is exact and nothing needs the dense bias."""
        if observers or len(biasers) != 1 or biasers[0].cond_only:
            return None
        if not structured_allowed(attention_fn, extra_options):
            return None
        return biasers[0].structured(call)

    def _cached_bias(
        self, biasers: list[BiasContribution], call: SiteCall, extra_options: dict, q: torch.Tensor
    ) -> torch.Tensor | None:
        """The assembled bias, built once per run for each grid, branch layout and set of contributions."""
        if call.cache is None:
            return self._assemble_bias(biasers, call, extra_options, q)
        chunks = tuple(extra_options.get("cond_or_uncond") or [0])
        key = (
            "assembled",
            tuple(id(c) for c in biasers),
            chunks,
            call.batch,
            call.hw,
            call.n_k,
            q.dtype,
            str(q.device),
        )
        if key not in call.cache:
            call.cache[key] = self._assemble_bias(biasers, call, extra_options, q)
        return call.cache[key]

    @staticmethod
    def _assemble_bias(
        biasers: list[BiasContribution], call: SiteCall, extra_options: dict, q: torch.Tensor
    ) -> torch.Tensor | None:
        """Sum the contributions per cond/uncond chunk into one (B or 1, 1, Nq, Nk) bias in q's dtype."""
        chunks = list(extra_options.get("cond_or_uncond") or [0])
        per_flag: dict[int, torch.Tensor | None] = {}
        for flag in set(chunks):
            parts = [c.bias(call) for c in biasers if not (c.cond_only and flag != 0)]
            total = None
            for p in parts:
                total = p if total is None else total + p
            per_flag[flag] = total
        if all(b is None for b in per_flag.values()):
            return None
        uniform = len(per_flag) == 1 or all(per_flag[f] is per_flag[chunks[0]] for f in per_flag)
        first = per_flag[chunks[0]]
        if uniform and first is not None and first.shape[0] == 1:
            return first.to(q.dtype).unsqueeze(1)  # (1, 1, Nq, Nk): broadcast to batch and heads
        pieces = []
        for flag in chunks:
            b = per_flag[flag]
            if b is None:
                b = torch.zeros(1, call.n_q, call.n_k, device=q.device, dtype=q.dtype)
            pieces.append(match_batch(b, call.batch, "attention masks"))
        return torch.cat(pieces, dim=0).to(q.dtype).unsqueeze(1)  # (B, 1, Nq, Nk)


def _run_state_wrapper(executor: Callable, *args: Any, **kwargs: Any) -> Any:
    """SAMPLER_SAMPLE wrapper: give the run a fresh RunState, check windows, report activity, drop it."""
    sigmas, extra_args = args[1], args[2]
    to = extra_args.setdefault("model_options", {}).setdefault("transformer_options", {})
    if RUN_STATE_KEY in to:  # an outer wrapper of ours already made one
        return executor(*args, **kwargs)
    schedule = RunSchedule(sigmas)
    labelled = regulating_contributions(to)
    for c in labelled:
        require_steps(schedule, c.window, c.label)
    check_sampled_prompt(
        getattr(args[0], "conds", None), [(c.label, c.prompt) for c in labelled if c.prompt is not None]
    )
    run = to[RUN_STATE_KEY] = RunState(schedule=schedule)
    try:
        return executor(*args, **kwargs)
    finally:
        to.pop(RUN_STATE_KEY, None)
        for buffer in run.captures.values():
            buffer.publish()
        report_activity(run, labelled)


def regulating_contributions(transformer_options: dict) -> list[Contribution]:
    """The labelled contributions installed in these options, once each, in installation order."""
    seen: dict[int, Contribution] = {}
    for kind in ("attn1", "attn2"):
        for patch in transformer_options.get("patches_replace", {}).get(kind, {}).values():
            if isinstance(patch, RegulatedAttention):
                for c in patch.contributions:
                    if c.label:
                        seen.setdefault(id(c), c)
    return list(seen.values())


def report_activity(run: RunState, expected: Sequence[Contribution] = ()) -> dict:
    """Log which steps each module acted on in this run (one readable line, one JSON line); return the record."""
    schedule = run.schedule
    record = {
        "n_steps": schedule.n_steps if schedule else 0,
        "sigmas": [round(x, 6) for x in schedule.sigmas] if schedule else [],
        "modules": {
            label: {"steps": sorted(a.steps), "calls": a.calls} for label, a in sorted(run.activity.items())
        },
    }
    if not record["modules"] and not expected:
        return record
    for label in sorted({c.label for c in expected} - set(run.activity)):
        log.warning("%s was enabled but acted on no step of this run (%s)", label, schedule.describe())
    parts = [
        f"{label} acted on steps {format_steps(a['steps'])} ({len(a['steps'])} of {record['n_steps']}; "
        f"{a['calls']} {'gradient passes' if label == 'EnergyLatentCorrector' else 'attention calls'})"
        for label, a in record["modules"].items()
    ]
    log.info("CXR regulation over %s: %s", schedule.describe() if schedule else "?", "; ".join(parts))
    log.info("cxr-activity %s", json.dumps(record))
    return record


def ensure_run_state(model_patcher: Any) -> None:
    import comfy.patcher_extension

    kind = comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE
    if not model_patcher.wrappers.get(kind, {}).get(WRAPPER_KEY):
        model_patcher.add_wrapper_with_key(kind, WRAPPER_KEY, _run_state_wrapper)


def install(model_patcher: Any, contribution: Contribution, sites: Sequence[SiteKey]) -> None:
    """Add ``contribution`` at each site of an already cloned ModelPatcher."""
    model_patcher.model_options = install_on_options(model_patcher.model_options, contribution, sites)
    ensure_run_state(model_patcher)


def install_on_options(model_options: dict, contribution: Contribution, sites: Sequence[SiteKey]) -> dict:
    """Return model_options with ``contribution`` added at each site (the input dicts are not modified)."""
    import comfy.model_patcher

    kind = require_contribution(contribution).kind
    for site in sites:
        replaces = model_options.get("transformer_options", {}).get("patches_replace", {}).get(kind, {})
        key3 = (site[0], site[1], 0)
        key = key3 if key3 in replaces else site
        existing = replaces.get(key)
        if isinstance(existing, RegulatedAttention):
            patch = existing.with_contribution(contribution)
        else:
            if existing is not None:
                log.info(
                    "%s %s%d: wrapping an attention replace registered earlier (%r)", kind, *site, existing
                )
            patch = RegulatedAttention(site, kind, (contribution,), inner=existing)
        model_options = comfy.model_patcher.set_model_options_patch_replace(
            model_options, patch, kind, site[0], site[1], 0 if key == key3 else None
        )
    return model_options


def installed(model_patcher: Any, kind: str) -> dict:
    """The RegulatedAttention patches on a ModelPatcher, by key (for inspection and tests)."""
    replaces = (
        model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get(kind, {})
    )
    return {k: v for k, v in replaces.items() if isinstance(v, RegulatedAttention)}
