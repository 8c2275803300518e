"""PathologyCrossAttnReweight: pull pathology-word cross-attention toward a spatial prior.

docs/METHOD.md section 3; the math is in cxr_core/attention/contributions.py.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..cxr_core.attention.contributions import PathologyReweight
from ..cxr_core.attention.schedule import model_window
from .attention_common import (
    enabled_input,
    model_input,
    model_output,
    prior_input,
    prompt_input,
    sites_input,
    window_inputs,
)
from .attention_patching import patch_model, require_prompt
from .attention_sites import model_sites
from .sockets import CATEGORY
from .validation import require_finite


def validate_prior(prior: torch.Tensor, node: str) -> torch.Tensor:
    """A (B, H, W) prior in [0, 1] with some area, or a clear error."""
    if not isinstance(prior, torch.Tensor) or prior.ndim not in (2, 3):
        got = tuple(prior.shape) if isinstance(prior, torch.Tensor) else type(prior).__name__
        raise ValueError(f"{node}: prior must be a MASK shaped (H, W) or (B, H, W), received {got}")
    p = prior.unsqueeze(0) if prior.ndim == 2 else prior
    p = p.float()
    if not torch.isfinite(p).all():
        raise ValueError(f"{node}: prior contains NaN or Inf")
    if float(p.min()) < -1e-4 or float(p.max()) > 1 + 1e-4:
        raise ValueError(
            f"{node}: prior must lie in [0, 1], received [{float(p.min()):.3g}, {float(p.max()):.3g}]"
        )
    empty = [i for i in range(p.shape[0]) if float(p[i].max()) <= 0]
    if empty:
        raise ValueError(
            f"{node}: prior is empty (all zero) for batch item(s) {empty}; build it with PathologySpatialPrior "
            "or draw a region"
        )
    return p.clamp(0.0, 1.0)


class PathologyCrossAttnReweight(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PathologyCrossAttnReweight",
            display_name="Pathology Cross-Attention Reweight",
            category=f"{CATEGORY}/attention",
            description="During early denoising, multiplies the pathology words' cross-attention by lambda_in inside "
            "the spatial prior and divides it by lambda_out outside, so the finding forms where it belongs.",
            inputs=[
                model_input(),
                prompt_input(),
                prior_input(),
                io.Float.Input(
                    "lambda_in",
                    default=3.0,
                    min=1.0,
                    max=50.0,
                    step=0.1,
                    tooltip="Attention gain inside the prior (>= 1). 2-5 is typical.",
                ),
                io.Float.Input(
                    "lambda_out",
                    default=3.0,
                    min=1.0,
                    max=50.0,
                    step=0.1,
                    tooltip="Attention damping outside the prior (>= 1). 2-5 is typical.",
                ),
                *window_inputs(0.0, 0.4),
                sites_input("all"),
                enabled_input(),
            ],  # fmt: skip
            outputs=[model_output()],
        )

    @classmethod
    def execute(
        cls, model, prompt, prior: torch.Tensor, lambda_in: float, lambda_out: float, start_percent: float,
        end_percent: float, sites: str, enabled: bool, window_schedule: str = "run",
    ) -> io.NodeOutput:  # fmt: skip
        require_finite(cls, locals())
        if not enabled:
            return io.NodeOutput(model)
        node = "PathologyCrossAttnReweight"
        if lambda_in <= 0 or lambda_out <= 0:
            raise ValueError(
                f"{node}: lambda_in and lambda_out must be > 0, received {lambda_in}, {lambda_out}"
            )
        p = validate_prior(prior, node)
        prompt = require_prompt(node, prompt)
        site_keys = model_sites(model, sites)
        contribution = PathologyReweight(
            prior=p, positions=prompt.pathology_positions, prompt_len=prompt.n_tokens, prompt=prompt,
            lambda_in=float(lambda_in), lambda_out=float(lambda_out),
            window=model_window(model, start_percent, end_percent, window_schedule),
        )  # fmt: skip
        return io.NodeOutput(patch_model(model, site_keys, contribution))


NODES: list[type[io.ComfyNode]] = [PathologyCrossAttnReweight]
