"""Inputs shared by the attention nodes, declared once."""

from __future__ import annotations

from comfy_api.latest import io

from ..cxr_core.attention.schedule import SCHEDULES
from .sockets import PromptIO


def enabled_input() -> io.Boolean.Input:
    return io.Boolean.Input(
        "enabled",
        default=True,
        tooltip="Off returns the model unchanged: output bit-identical to not using the node.",
    )


def window_inputs(start: float, end: float) -> list[io.Input]:
    return [
        io.Float.Input(
            "start_percent", default=start, min=0.0, max=1.0, step=0.01,
            tooltip="Progress at which the module switches on: 0 = the first step this sampler takes (with "
            "denoise 0.6, the first step of the edit), 1 = its last step.",
        ),
        io.Float.Input(
            "end_percent", default=end, min=0.0, max=1.0, step=0.01,
            tooltip="Progress after which the module switches off (1 = the last step of this sampling run).",
        ),
        schedule_input(),
    ]  # fmt: skip


def schedule_input() -> io.Combo.Input:
    return io.Combo.Input(
        "window_schedule",
        options=list(SCHEDULES),
        default="run",
        optional=True,  # API workflows saved before it existed keep working, with the default
        tooltip="run: start/end are fractions of this sampling run's own steps (whatever the denoise, scheduler, "
        "start/end steps or custom sigmas). model: fractions of the model's full noise schedule (ComfyUI's "
        "convention for ControlNet etc.); with denoise < 1 an early window may then hold no step, which is an error.",
    )


def sites_input(default: str) -> io.String.Input:
    return io.String.Input(
        "sites",
        default=default,
        tooltip="Attention sites to patch, read from the connected model: 'fine', 'mid', 'coarse' (its finest, "
        "in-between and coarsest attention levels, comma-separated; on SD1.5 and SD2 at 512 px these are the 64x64, "
        "32x32 and 16x16 sites, on SDXL at 1024 px 'mid' and 'coarse' are 64x64 and 32x32); 'middle'; 'all'; "
        "'input' or 'output'; token-grid sides at the model's native size such as '64,32'; or single sites "
        "such as 'input4,output9'.",
    )


def prompt_input(optional: bool = False, use: str = "the pathology words") -> io.Input:
    return PromptIO.Input(
        "prompt",
        optional=optional,
        tooltip=f"From CXR Prompt: the sampled prompt and {use}. The sampler must be conditioned on that node's "
        "conditioning; anything else stops the run before the first step.",
    )


def model_input() -> io.Model.Input:
    return io.Model.Input("model", tooltip="The diffusion model to patch (an SD1.x, SD2.x or SDXL UNet).")


def model_output() -> io.Model.Output:
    return io.Model.Output(tooltip="A patched copy of the model; the input model is left unchanged.")


def prior_input() -> io.Mask.Input:
    return io.Mask.Input(
        "prior", tooltip="Target region in [0,1] at image resolution (PathologySpatialPrior)."
    )
