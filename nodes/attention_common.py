"""Inputs shared by the attention nodes, declared once."""

from __future__ import annotations

from comfy_api.latest import io


def enabled_input() -> io.Boolean.Input:
    return io.Boolean.Input(
        "enabled",
        default=True,
        tooltip="Off returns the model unchanged: output bit-identical to not using the node.",
    )


def window_inputs(start: float, end: float) -> list[io.Float.Input]:
    return [
        io.Float.Input(
            "start_percent", default=start, min=0.0, max=1.0, step=0.01,
            tooltip="Sampling progress at which the module switches on (0 = first step). Converted to sigma once.",
        ),
        io.Float.Input(
            "end_percent", default=end, min=0.0, max=1.0, step=0.01,
            tooltip="Sampling progress after which the module switches off (1 = last step).",
        ),
    ]  # fmt: skip


def sites_input(default: str) -> io.String.Input:
    return io.String.Input(
        "sites",
        default=default,
        tooltip="Attention sites to patch: 'all'; token-grid sizes at a 512-px image ('64,32' = the fine sites, "
        "'16' = the 16x16 sites, '8' = middle); 'input', 'middle', 'output'; or sites like 'input4,output9'.",
    )
