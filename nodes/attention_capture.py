"""AttentionMapCapture and AttentionMapRender: record pathology-word attention, draw it over the image.

The recording machinery is cxr_core/attention/capture.py (shared with the
energy probe's approach); the drawing is cxr_core/heatmaps.py.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..cxr_core.attention.capture import AttentionMapStore, CrossAttentionCapture
from ..cxr_core.attention.tokens import parse_word_list
from ..cxr_core.heatmaps import render_heatmap
from .attention_common import enabled_input, model_input, model_output, prompt_input, sites_input
from .attention_patching import patch_model, require_prompt
from .attention_sites import model_sites
from .sockets import CATEGORY, AttentionMapsIO
from .validation import require_finite


def parse_steps(text: str) -> frozenset[int] | None:
    t = (text or "").strip().lower()
    if t in ("", "all"):
        return None
    try:
        return frozenset(int(s) for s in t.replace(";", ",").split(",") if s.strip())
    except ValueError as e:
        raise ValueError(f"steps: expected 'all' or step indices like '0,4,9', received '{text}'") from e


class AttentionMapCapture(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AttentionMapCapture",
            display_name="Attention Map Capture",
            category=f"{CATEGORY}/visualise",
            description="Records the cond-branch cross-attention maps of chosen words at chosen sites and steps during "
            "the next sampling run. Connect its MODEL to the sampler and its maps to Attention Map Render.",
            inputs=[
                model_input(),
                prompt_input(use="the words to record"),
                io.String.Input(
                    "words",
                    default="",
                    tooltip="Words to record, comma-separated, each in the prompt's text. Empty: the prompt's "
                    "pathology words and anatomy words.",
                ),
                sites_input("coarse"),
                io.String.Input(
                    "steps", default="all", tooltip="'all', or step indices to record such as '0,4,9'."
                ),
                enabled_input(),
            ],  # fmt: skip
            outputs=[
                model_output(),
                AttentionMapsIO.Output(
                    display_name="attention_maps",
                    tooltip="The recorded maps of the latest run, for Attention Map Render.",
                ),
            ],
        )

    @classmethod
    def execute(cls, model, prompt, words: str, sites: str, steps: str, enabled: bool) -> io.NodeOutput:
        node = "AttentionMapCapture"
        prompt = require_prompt(node, prompt, need="any")
        word_list = parse_word_list(words) or [*prompt.pathology, *(w for w, _, _ in prompt.anatomy)]
        if not word_list:
            raise ValueError(
                f"{node}: no words to record; give words here or pathology_words in the CXR Prompt, e.g. 'effusion'"
            )
        try:
            positions = prompt.positions(word_list)
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from e
        store = AttentionMapStore(tuple(positions))
        if not enabled:
            return io.NodeOutput(model, store)
        site_keys = model_sites(model, sites)
        capture = CrossAttentionCapture(
            words=positions, prompt_len=prompt.n_tokens, prompt=prompt, store=store, steps=parse_steps(steps),
        )  # fmt: skip
        return io.NodeOutput(patch_model(model, site_keys, capture), store)


class AttentionMapRender(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AttentionMapRender",
            display_name="Attention Map Render",
            category=f"{CATEGORY}/visualise",
            description="Draws the maps recorded by Attention Map Capture as heatmaps over the image, one per word "
            "(and per step if asked), with a colour bar. Connect the decoded sampler output as image.",
            inputs=[
                AttentionMapsIO.Input(
                    "attention_maps",
                    tooltip="From Attention Map Capture: the maps recorded during the sampling run.",
                ),
                io.Image.Input(
                    "image", tooltip="Background, normally the decoded result of the recorded run."
                ),
                io.String.Input(
                    "steps",
                    default="mean",
                    tooltip="'mean' (average over recorded steps), 'each', or step indices '0,4'.",
                ),
                io.Float.Input("alpha", default=0.5, min=0.0, max=1.0, step=0.05, tooltip="Heatmap opacity."),
            ],  # fmt: skip
            outputs=[
                io.Image.Output(
                    display_name="heatmaps",
                    tooltip="One heatmap per word (and per step if asked) over the image, colour bar on the right.",
                )
            ],
        )

    @classmethod
    def execute(
        cls, attention_maps: AttentionMapStore, image: torch.Tensor, steps: str, alpha: float
    ) -> io.NodeOutput:
        require_finite(cls, locals())
        maps = attention_maps.maps()
        if not maps:
            raise ValueError(
                "AttentionMapRender: no attention maps were recorded. Connect AttentionMapCapture's MODEL to the "
                "sampler, keep it enabled, and feed this node the image decoded from that sampler's output."
            )
        frames = []
        bg = image[0]
        for word, by_step in maps.items():
            for label, heat in _select(by_step, steps):
                frames.append(render_heatmap(bg, heat[0], f"{word} ({label})", alpha))
        return io.NodeOutput(torch.stack(frames), ui={"cxr_attention": _browse_frames(maps, bg, alpha)})


def _browse_frames(maps: dict[str, dict[int, torch.Tensor]], bg: torch.Tensor, alpha: float) -> list[dict]:
    """Every word at the mean and at each recorded step, saved as previews for the node's browser.

    The editor (js/cxr_attention.js) lets the user pick the word and the step;
    each entry is {"word", "step" ("mean" or the step index), "image": preview file}.
    """
    keys, frames = [], []
    for word, by_step in maps.items():
        for label, heat in _select(by_step, "mean") + _select(by_step, "each"):
            step = "mean" if label.startswith("mean") else label.removeprefix("step ")
            keys.append((word, step))
            frames.append(render_heatmap(bg, heat[0], f"{word} ({label})", alpha))
    saved = ui.PreviewImage(torch.stack(frames)).as_dict()["images"]
    return [{"word": w, "step": s, "image": img} for (w, s), img in zip(keys, saved, strict=True)]


def _select(by_step: dict[int, torch.Tensor], steps: str) -> list[tuple[str, torch.Tensor]]:
    t = (steps or "mean").strip().lower()
    recorded = sorted(by_step)
    if t in ("", "mean", "all"):
        return [
            (
                f"mean of steps {recorded[0]}-{recorded[-1]}",
                torch.stack([by_step[s] for s in recorded]).mean(0),
            )
        ]
    if t == "each":
        return [(f"step {s}", by_step[s]) for s in recorded]
    wanted = parse_steps(t) or frozenset()
    missing = sorted(wanted - set(recorded))
    if missing:
        raise ValueError(
            f"AttentionMapRender: steps {missing} were not recorded; recorded steps are {recorded}"
        )
    return [(f"step {s}", by_step[s]) for s in sorted(wanted)]


NODES: list[type[io.ComfyNode]] = [AttentionMapCapture, AttentionMapRender]
