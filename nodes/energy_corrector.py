"""EnergyLatentCorrector: move the latent down the attention-concentration energy in early steps.

docs/METHOD.md section 4; the algorithm is in cxr_core/attention/correction.py.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..cxr_core.attention.correction import LatentCorrector, make_sampler_wrapper
from ..cxr_core.attention.engine import ensure_run_state
from ..cxr_core.attention.schedule import model_window
from .attention_common import (
    enabled_input,
    model_input,
    model_output,
    prior_input,
    prompt_input,
    schedule_input,
    sites_input,
)
from .attention_patching import require_prompt
from .attention_sites import model_sites
from .pathology_reweight import validate_prior
from .sockets import CATEGORY
from .validation import require_finite

WRAPPER_KEY = "cxr_counterfactual.latent_correction"


def build_corrector(
    model, prompt, prior: torch.Tensor, *, eta: float = 30.0, iterations: int = 1, end_percent: float = 0.25,
    kappa: float = 0.1, energy_threshold: float = 0.2, sites: str = "coarse", truncate: bool = True,
    window_schedule: str = "run",
) -> LatentCorrector:  # fmt: skip
    node = "EnergyLatentCorrector"
    p = validate_prior(prior, node)
    prompt = require_prompt(node, prompt)
    if not 1 <= int(iterations) <= 5:
        raise ValueError(f"{node}: iterations must be 1..5, received {iterations}")
    site_keys = model_sites(model, sites)
    return LatentCorrector(
        prior=p, columns=prompt.pathology_positions, prompt_len=prompt.n_tokens, prompt=prompt,
        window=model_window(model, 0.0, end_percent, window_schedule),
        sites=site_keys, eta=float(eta), n_iter=int(iterations), kappa=float(kappa),
        threshold=float(energy_threshold), truncate=bool(truncate),
    )  # fmt: skip


def attach_corrector(model, corrector: LatentCorrector):  # noqa: ANN001, ANN201
    """A clone of ``model`` that applies ``corrector`` in every sampling run."""
    import comfy.patcher_extension

    m = model.clone()
    m.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, WRAPPER_KEY, make_sampler_wrapper(corrector)
    )
    ensure_run_state(m)
    return m


class EnergyLatentCorrector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EnergyLatentCorrector",
            display_name="Energy Latent Corrector",
            category=f"{CATEGORY}/attention",
            description="In early denoising, nudges the latent itself down the gradient of an attention-concentration "
            "energy so the pathology words' attention (and the lesion) lands inside the prior. Works at the sampler "
            "level with KSampler, KSamplerAdvanced and SamplerCustom.",
            inputs=[
                model_input(),
                prompt_input(),
                prior_input(),
                io.Float.Input(
                    "eta",
                    default=30.0,
                    min=0.0,
                    max=1000.0,
                    step=1.0,
                    tooltip="Step size: z <- z - eta sigma^2 grad E. 10-100 is typical.",
                ),
                io.Int.Input(
                    "iterations", default=1, min=1, max=5, tooltip="Gradient iterations per corrected step."
                ),
                io.Float.Input(
                    "end_percent",
                    default=0.25,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Correct the steps up to this progress: 0 = the first step this sampler takes, 1 = its "
                    "last (0.25 of a 20-step run = steps 0-4).",
                ),
                schedule_input(),
                io.Float.Input(
                    "kappa",
                    default=0.1,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Clamp: rms(step) <= kappa * sigma.",
                ),
                io.Float.Input(
                    "energy_threshold",
                    default=0.2,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Stop iterating once E falls below this.",
                ),
                sites_input("coarse"),
                io.Boolean.Input(
                    "truncate",
                    default=True,
                    tooltip="Stop the gradient pass after the last energy site (faster; same result).",
                ),
                enabled_input(),
            ],  # fmt: skip
            outputs=[model_output()],
        )

    @classmethod
    def execute(
        cls, model, prompt, prior: torch.Tensor, eta: float, iterations: int,
        end_percent: float, kappa: float, energy_threshold: float, sites: str, truncate: bool, enabled: bool,
        window_schedule: str = "run",
    ) -> io.NodeOutput:  # fmt: skip
        require_finite(cls, locals())
        if not enabled:
            return io.NodeOutput(model)
        corrector = build_corrector(
            model, prompt, prior, eta=eta, iterations=iterations, end_percent=end_percent,
            kappa=kappa, energy_threshold=energy_threshold, sites=sites, truncate=truncate,
            window_schedule=window_schedule,
        )  # fmt: skip
        return io.NodeOutput(attach_corrector(model, corrector))


NODES: list[type[io.ComfyNode]] = [EnergyLatentCorrector]
