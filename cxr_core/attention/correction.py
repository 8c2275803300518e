"""Latent correction down the energy gradient, at the sampler level (docs/METHOD.md section 4).

For each step in the correction window (schedule.py: by default the first
``end`` fraction of this sampling call's own steps), before the step is taken: up to n_iter times, z <- z - eta sigma^2 grad E(z), the step's rms
clamped to kappa sigma, stopping once E < threshold. The corrected latent
becomes the sampler's state (Attend-and-Excite semantics): the sampler
function is run one step at a time through the window and in one call after
it. Single-step samplers (euler, euler_ancestral, ddim, ...) take exactly the
same steps; multistep samplers (dpmpp_2m, uni_pc, ...) restart their history
at each window step and once after it. Ancestral samplers keep one noise
stream across the split calls.

The gradient pass is cond-only, leaves inference mode, sees autograd
copies of the weights for that pass only, and stops after the last energy site
in the model's execution order (site_scheme.py), once every transformer block
of that site has run (SDXL has several per site).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .autograd import AliasCache, autograd_compatible_weights, gradient_pass
from .energy import EnergyProbe, StopForward, concentration_energy
from .engine import RUN_STATE_KEY, install_on_options
from .prompt import RegulatedPrompt, check_sampled_prompt
from .protocol import SiteCall, run_cached
from .schedule import RunSchedule, Window, require_steps
from .site_masks import match_batch
from .site_scheme import SiteKey, SiteScheme, scheme_of

log = logging.getLogger("cxr_counterfactual.correction")


@dataclass(frozen=True, eq=False)
class LatentCorrector:
    label: ClassVar[str] = "EnergyLatentCorrector"

    prior: torch.Tensor  # (Bm, H, W) in [0, 1]
    columns: tuple[int, ...]  # pathology token positions
    prompt_len: int
    window: Window  # the steps to correct: progress 0..end
    sites: tuple[SiteKey, ...]  # energy sites, in the model's execution order (as model_sites gives them)
    eta: float = 30.0
    n_iter: int = 1
    kappa: float = 0.1
    threshold: float = 0.2
    truncate: bool = True
    trace: list = field(default_factory=list, compare=False)  # filled only when record=True
    record: bool = False
    prompt: RegulatedPrompt | None = None  # the prompt the columns come from (checked against the sampler)

    def __deepcopy__(self, memo: dict) -> LatentCorrector:
        return self

    def truncation(self, scheme: SiteScheme) -> TruncateAfter | None:
        """Where the gradient pass of a model with this scheme stops: after the last energy site run."""
        if not self.truncate or not self.sites:
            return None
        last = max(self.sites, key=scheme.index)
        return TruncateAfter(site=last, last_index=scheme.site(last).depth - 1)

    def energy_and_grad(  # noqa: ANN201
        self,
        guider: Any,
        x: torch.Tensor,
        sigma: float,
        model_options: dict,
        aliases: AliasCache | None = None,
    ):
        """(E (B,), dE/dx (B, C, H, W)) from one cond-only gradient pass; ``aliases``: the run's weight aliases."""
        import comfy.model_patcher
        import comfy.samplers

        model = guider.inner_model
        probe = EnergyProbe(self.columns, self.prompt_len)
        mo = install_on_options(
            comfy.model_patcher.create_model_options_clone(model_options), probe, self.sites
        )
        stop = self.truncation(scheme_of(model))
        if stop is not None:  # installed after the probe, so the probe sees the last call first
            mo = install_on_options(mo, stop, [stop.site])
        with gradient_pass(), autograd_compatible_weights(model.diffusion_model, aliases):
            z = x.detach().clone().requires_grad_(True)
            s = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=x.dtype)
            run = mo.get("transformer_options", {}).get(RUN_STATE_KEY)
            if run is not None:  # the pass's sigma is known here: its attention calls need not read s back
                run.sigma = (s, float(sigma))
            try:
                comfy.samplers.calc_cond_batch(model, [guider.conds["positive"]], z, s, mo)
            except StopForward:
                pass
            prior = match_batch(self._prior_on(x.device, run), x.shape[0], "EnergyLatentCorrector prior")
            energy = concentration_energy(probe.maps, prior)
            (grad,) = torch.autograd.grad(energy.sum(), z)
        return energy.detach(), grad.detach()

    def _prior_on(self, device: torch.device, run: Any) -> torch.Tensor:
        """The prior on the device as an ordinary tensor autograd can save; copied to the device once per run
        (a copy from host memory waits for the device)."""
        cache = run.cache if run is not None else None
        return run_cached(
            cache, ("corrector-prior", id(self), str(device)), lambda: self.prior.to(device).clone()
        )

    def correct(
        self,
        guider: Any,
        x: torch.Tensor,
        sigma: float,
        model_options: dict,
        aliases: AliasCache | None = None,
    ) -> tuple[torch.Tensor, list]:
        """The corrected latent and the energies seen, [E_0, E_1, ...] per iteration (each (B,))."""
        energies: list[torch.Tensor] = []
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)  # on the device, for the update
        for _ in range(self.n_iter):
            energy, grad = self.energy_and_grad(guider, x, sigma, model_options, aliases)
            finite = torch.isfinite(grad).flatten(1).all(1) & torch.isfinite(energy)
            active &= (energy >= self.threshold) & finite
            # one copy to the host for the record and both decisions (each read waits for the device)
            e_host, finite_host, active_host = torch.stack(
                [energy.float(), finite.float(), active.float()]
            ).cpu()
            energies.append(e_host.to(energy.dtype))
            bad = [i for i, ok in enumerate(finite_host.tolist()) if not ok]
            if bad:
                log.warning("EnergyLatentCorrector: non-finite gradient at sigma %.4g for items %s; update skipped",
                            sigma, bad)  # fmt: skip
            if not any(active_host.tolist()):
                break
            step = self.eta * sigma**2 * torch.nan_to_num(grad)
            rms = step.flatten(1).pow(2).mean(1).sqrt()  # (B,)
            limit = self.kappa * sigma
            scale = torch.where(rms > limit, limit / rms.clamp(min=1e-12), torch.ones_like(rms))
            step = step * (scale * active).view(-1, *([1] * (x.ndim - 1))).to(step)
            x = x - step.to(x.dtype)
        if self.record:
            final, _ = self.energy_and_grad(guider, x, sigma, model_options, aliases)
            self.trace.append({"sigma": float(sigma), "energies": [*energies, final.cpu()]})
        log.debug("energy at sigma %.4g: %s", sigma, [e.tolist() for e in energies])
        return x, energies

    def n_window_steps(self, sigmas: torch.Tensor | RunSchedule) -> int:
        """How many leading steps of this sampling call to correct (the window starts at the first step)."""
        schedule = sigmas if isinstance(sigmas, RunSchedule) else RunSchedule(sigmas)
        steps = [i for i in schedule.window_steps(self.window) if schedule.sigmas[i] > 0]
        return steps[-1] + 1 if steps else 0


@dataclass(frozen=True, eq=False)
class TruncateAfter:
    """Observer that ends the gradient pass after the last transformer block of one site."""

    role: ClassVar[str] = "observe"
    label: ClassVar[str] = ""  # internal to the corrector's gradient pass: not reported on its own

    site: SiteKey
    last_index: int  # block_index of the site's last transformer block (depth - 1)
    window: Window = field(default_factory=Window)
    kind: str = "attn2"
    cond_only: bool = True
    prompt: RegulatedPrompt | None = None

    def observe(self, call: SiteCall, q, k, v, bias, extra_options: dict) -> None:  # noqa: ANN001
        if call.site == self.site and int(extra_options.get("block_index", 0)) >= self.last_index:
            raise StopForward


def _function_name(fn: Callable) -> str:
    return getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "") or ""


def stepwise_sampler_function(original: Callable, corrector: LatentCorrector) -> Callable:
    """A k-diffusion style sampler function that corrects the latent before each window step."""

    def sample(model_k, x, sigmas, extra_args=None, callback=None, disable=None, **kw):  # noqa: ANN001, ANN202
        extra_args = {} if extra_args is None else extra_args
        schedule = RunSchedule(sigmas)  # the sigmas on the host, read once for the whole call
        k = corrector.n_window_steps(schedule)
        if k == 0:
            return original(
                model_k, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **kw
            )
        if (
            "ancestral" in _function_name(original)
            and "noise_sampler" in inspect.signature(original).parameters
        ):
            from comfy.k_diffusion.sampling import default_noise_sampler

            kw.setdefault("noise_sampler", default_noise_sampler(x, seed=extra_args.get("seed")))
        guider = getattr(model_k, "inner_model", model_k)
        model_options = extra_args.get("model_options", {})
        run = model_options.get("transformer_options", {}).get(RUN_STATE_KEY)
        n = len(sigmas) - 1
        aliases: AliasCache = {}  # this call's weight aliases, shared by its gradient passes, dropped at its end
        for i in range(k):
            x, energies = corrector.correct(guider, x, schedule.sigmas[i], model_options, aliases)
            if run is not None:
                run.record(LatentCorrector.label, i, calls=len(energies))
            x = original(model_k, x, sigmas[i : i + 2], extra_args=extra_args, callback=_offset(callback, i),
                         disable=True, **kw)  # fmt: skip
        if k < n:
            x = original(model_k, x, sigmas[k:], extra_args=extra_args, callback=_offset(callback, k), disable=disable,
                         **kw)  # fmt: skip
        return x

    return sample


def _offset(callback: Callable | None, offset: int) -> Callable | None:
    if callback is None or offset == 0:
        return callback
    return lambda d: callback({**d, "i": d["i"] + offset})


def make_sampler_wrapper(corrector: LatentCorrector) -> Callable:
    """SAMPLER_SAMPLE wrapper: run the sampler with the stepwise function, restore it afterwards."""

    def wrapper(executor, *args, **kwargs):  # noqa: ANN001, ANN202
        sampler = getattr(executor, "class_obj", None)
        original = getattr(sampler, "sampler_function", None)
        if original is None:
            log.warning(
                "EnergyLatentCorrector: sampler %r has no sampler_function; correction skipped", sampler
            )
            return executor(*args, **kwargs)
        require_steps(RunSchedule(args[1]), corrector.window, LatentCorrector.label)
        if corrector.prompt is not None:
            check_sampled_prompt(getattr(args[0], "conds", None), [(LatentCorrector.label, corrector.prompt)])
        had_attr = "sampler_function" in vars(sampler)
        sampler.sampler_function = stepwise_sampler_function(original, corrector)
        try:
            return executor(*args, **kwargs)
        finally:
            if had_attr:
                sampler.sampler_function = original
            else:
                del sampler.sampler_function

    return wrapper
