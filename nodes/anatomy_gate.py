"""AnatomyAttentionGate: organ-mask gating of self-attention and anatomy-word cross-attention.

docs/METHOD.md sections 1 and 2; the math is in cxr_core/attention/contributions.py.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..cxr_core.attention.contributions import AnatomyTokenGate, SelfAttentionGate
from ..cxr_core.attention.prompt import RegulatedPrompt
from ..cxr_core.attention.schedule import Window, model_window
from ..cxr_core.attention.tokens import parse_word_list
from ..cxr_core.organ_masks import OrganMasks
from .attention_common import (
    enabled_input,
    model_input,
    model_output,
    prompt_input,
    sites_input,
    window_inputs,
)
from .attention_patching import patch_model, require_prompt
from .attention_sites import model_sites
from .sockets import CATEGORY, OrganMasksIO
from .validation import require_finite


class AnatomyAttentionGate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnatomyAttentionGate",
            display_name="Anatomy Attention Gate",
            category=f"{CATEGORY}/attention",
            description="Gates UNet self-attention with organ masks so each organ's tokens attend within their own "
            "organ, and (optionally) confines anatomy words' cross-attention to their organ. Keeps the edit from "
            "drifting into the rest of the anatomy.",
            inputs=[
                model_input(),
                OrganMasksIO.Input("organ_masks", tooltip="Organ masks aligned with the image being edited."),
                io.String.Input(
                    "organs",
                    default="all",
                    tooltip="Organs whose tokens are gated, comma-separated (e.g. 'left_lung, right_lung, heart'), "
                    "or 'all'. Tokens outside them are background.",
                ),
                io.Float.Input(
                    "strength",
                    default=4.0,
                    min=0.0,
                    max=30.0,
                    step=0.1,
                    tooltip="gamma: logit penalty on cross-organ attention. Cross-organ mass falls by about "
                    "exp(-gamma); 2-8 is typical, 4 is the paper-style default.",
                ),
                io.Boolean.Input(
                    "hard", default=False, tooltip="Block cross-organ attention entirely (-inf)."
                ),
                io.Float.Input(
                    "tau",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="A token is gated when its total membership in the selected organs exceeds tau.",
                ),
                sites_input("fine, mid"),
                *window_inputs(0.0, 1.0),
                io.Combo.Input(
                    "background",
                    options=["free", "isolated"],
                    default="free",
                    tooltip="free: background tokens attend anywhere. isolated: they attend only to background.",
                ),
                enabled_input(),
                prompt_input(optional=True, use="its anatomy_words (word=organ pairs)"),
                io.Float.Input(
                    "anatomy_strength",
                    default=4.0,
                    min=0.0,
                    max=30.0,
                    step=0.1,
                    optional=True,
                    tooltip="gamma_a: logit penalty on an anatomy word's attention outside its organ (cond only). "
                    "Used when a prompt with anatomy_words is connected.",
                ),
            ],  # fmt: skip
            outputs=[model_output()],
        )

    @classmethod
    def execute(
        cls, model, organ_masks: OrganMasks, organs: str, strength: float, hard: bool, tau: float, sites: str,
        start_percent: float, end_percent: float, background: str, enabled: bool, prompt=None,
        anatomy_strength: float = 4.0, window_schedule: str = "run",
    ) -> io.NodeOutput:  # fmt: skip
        require_finite(cls, locals())
        if not enabled:
            return io.NodeOutput(model)
        if not isinstance(organ_masks, OrganMasks):
            raise ValueError(
                f"AnatomyAttentionGate: organ_masks must be ORGAN_MASKS, received {type(organ_masks)}"
            )
        site_keys = model_sites(model, sites)
        names = organ_masks.names if organs.strip().lower() in ("", "all") else parse_word_list(organs)
        selected = organ_masks.select(names)
        window = model_window(model, start_percent, end_percent, window_schedule)
        gate = SelfAttentionGate(
            masks=selected.masks, gamma=float(strength), hard=bool(hard), tau=float(tau),
            isolate_background=background == "isolated", window=window,
        )  # fmt: skip
        word_gates = ()
        if prompt is not None:
            prompt = require_prompt("AnatomyAttentionGate", prompt, need="any")
            if prompt.anatomy:
                word_gates = (_anatomy_token_gate(organ_masks, prompt, anatomy_strength, window),)
        return io.NodeOutput(patch_model(model, site_keys, gate, *word_gates))


def _anatomy_token_gate(
    organ_masks: OrganMasks, prompt: RegulatedPrompt, gamma: float, window: Window
) -> AnatomyTokenGate:
    resolved: list[tuple[tuple[int, ...], torch.Tensor]] = []
    for _word, organ_spec, positions in prompt.anatomy:
        organ_names = [o for o in organ_spec.replace("+", ",").split(",") if o.strip()]
        resolved.append((positions, organ_masks.union(organ_names)))
    return AnatomyTokenGate(
        bindings=tuple(resolved), prompt_len=prompt.n_tokens, prompt=prompt, gamma=float(gamma), window=window
    )


NODES: list[type[io.ComfyNode]] = [AnatomyAttentionGate]
