"""AnatomyAttentionGate: organ-mask gating of self-attention and anatomy-word cross-attention.

docs/METHOD.md sections 1 and 2; the math is in cxr_core/attention/contributions.py.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..cxr_core.attention.contributions import AnatomyTokenGate, SelfAttentionGate
from ..cxr_core.attention.engine import install
from ..cxr_core.attention.schedule import Window, model_window
from ..cxr_core.attention.tokens import (
    find_word_tokens,
    parse_word_bindings,
    parse_word_list,
    tokenize_prompt,
)
from ..cxr_core.organ_masks import OrganMasks
from .attention_common import enabled_input, sites_input, window_inputs
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
                io.Model.Input("model"),
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
                sites_input("64,32"),
                *window_inputs(0.0, 1.0),
                io.Combo.Input(
                    "background",
                    options=["free", "isolated"],
                    default="free",
                    tooltip="free: background tokens attend anywhere. isolated: they attend only to background.",
                ),
                enabled_input(),
                io.Clip.Input(
                    "clip", optional=True, tooltip="For the anatomy-word gate: the CLIP of the prompt."
                ),
                io.String.Input(
                    "text",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="For the anatomy-word gate: the positive prompt, exactly as encoded.",
                ),
                io.String.Input(
                    "anatomy_words",
                    default="",
                    optional=True,
                    tooltip="word=organ pairs, e.g. 'heart=heart, lungs=left_lung+right_lung'. Empty: no word gate.",
                ),
                io.Float.Input(
                    "anatomy_strength",
                    default=4.0,
                    min=0.0,
                    max=30.0,
                    step=0.1,
                    optional=True,
                    tooltip="gamma_a: logit penalty on an anatomy word's attention outside its organ (cond only).",
                ),
            ],  # fmt: skip
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(
        cls, model, organ_masks: OrganMasks, organs: str, strength: float, hard: bool, tau: float, sites: str,
        start_percent: float, end_percent: float, background: str, enabled: bool, clip=None, text: str = "",
        anatomy_words: str = "", anatomy_strength: float = 4.0, window_schedule: str = "run",
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
        m = model.clone()
        gate = SelfAttentionGate(
            masks=selected.masks, gamma=float(strength), hard=bool(hard), tau=float(tau),
            isolate_background=background == "isolated", sites=frozenset(site_keys), window=window,
        )  # fmt: skip
        install(m, gate, site_keys)
        bindings = parse_word_bindings(anatomy_words)
        if bindings:
            install(m, _anatomy_token_gate(organ_masks, clip, text, bindings, anatomy_strength, site_keys, gate.window),
                    site_keys)  # fmt: skip
        return io.NodeOutput(m)


def _anatomy_token_gate(
    organ_masks: OrganMasks, clip, text: str, bindings: list[tuple[str, str]], gamma: float,
    site_keys: tuple, window: Window,
) -> AnatomyTokenGate:  # fmt: skip
    if clip is None or not text.strip():
        raise ValueError(
            "AnatomyAttentionGate: anatomy_words needs the clip input and the prompt text; connect CLIP and "
            "paste the positive prompt, or clear anatomy_words"
        )
    positions = find_word_tokens(clip, text, [w for w, _ in bindings])
    prompt_len = tokenize_prompt(clip, text).length
    resolved: list[tuple[tuple[int, ...], torch.Tensor]] = []
    for word, organ_spec in bindings:
        organ_names = [o for o in organ_spec.replace("+", ",").split(",") if o.strip()]
        resolved.append((tuple(positions[word]), organ_masks.union(organ_names)))
    return AnatomyTokenGate(
        bindings=tuple(resolved),
        prompt_len=prompt_len,
        gamma=float(gamma),
        sites=frozenset(site_keys),
        window=window,
    )


NODES: list[type[io.ComfyNode]] = [AnatomyAttentionGate]
