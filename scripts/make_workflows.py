"""Generate example_workflows/: editor (UI) workflows, their API twins and thumbnails.

    python scripts/make_workflows.py                    # starts a local ComfyUI with the random checkpoint
    python scripts/make_workflows.py --keep-thumbnails  # graphs only; the committed thumbnails stay

The server gives /object_info and runs each workflow once (random SD1.5
weights, 128 px, 4 steps) for its thumbnail: the workflow's own outputs,
labelled as a random-weights run. Node positions, sizes and groups are not
written by hand: :func:`layout` computes them from the links and the nodes'
estimated sizes after a run, so editing a graph never needs re-placing nodes.

The graphs are written here once, as code, so the full method, the ablations
and the baselines share one layout; the UI files are what users open, the API
twins (example_workflows/api/) are what the headless runner queues. Ablations
bypass one module (mode 4), exactly as a user would in the editor.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from import_pack import CACHE, REPO, import_pack

import_pack()  # cxr_runner only: it never imports ComfyUI
from cxr_pack.cxr_runner.workflow_format import input_specs, is_widget, ui_to_api, validate_ui  # noqa: E402
from workflow_thumbnails import output_thumbnail, run_for_thumbnail  # noqa: E402

OUT = REPO / "example_workflows"
PROMPT = "chest x-ray, PA view, left pleural effusion"
WORDS = "pleural, effusion"
CKPT = "cxr_random_sd15_seed0.safetensors"


@dataclass
class Graph:
    info: dict
    nodes: list = field(default_factory=list)
    links: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    hints: dict = field(default_factory=dict)  # node id -> (row, col): the order of nodes within a column

    def add(self, ctype: str, title: str, col: float, row: float, mode: int = 0, **values) -> int:
        """Add a node; tuple values (node id, output slot) are links, the rest widget values.

        ``col`` and ``row`` only order nodes that the layout puts in the same
        column; positions and sizes are computed by :func:`layout` from the links.
        """
        links = {k: values.pop(k) for k in [k for k, v in values.items() if isinstance(v, tuple)]}
        nid = len(self.nodes) + 1
        specs = input_specs(self.info, ctype)
        node = {"id": nid, "type": ctype, "title": title, "pos": [0, 0], "mode": mode,
                "flags": {}, "order": nid - 1, "properties": {"Node name for S&R": ctype},
                "inputs": [], "outputs": [], "widgets_values": []}  # fmt: skip
        info = self.info[ctype]
        for slot, (otype, oname) in enumerate(zip(info["output"], info["output_name"], strict=True)):
            node["outputs"].append({"name": oname, "type": otype, "links": [], "slot_index": slot})
        multiline = 0
        for name, kind, opts in specs:
            value = values.pop(name, None)
            if is_widget(kind):
                if value is None:
                    value = opts.get("default")
                    if value is None and kind == "COMBO":
                        value = _combo_options(self.info, ctype, name)[0]
                node["widgets_values"].append(value)
                multiline += bool(opts.get("multiline"))
                if opts.get("control_after_generate"):
                    node["widgets_values"].append("fixed")
            else:
                node["inputs"].append({"name": name, "type": kind, "link": None})
        if values:
            raise ValueError(f"{ctype}: unknown inputs {sorted(values)}")
        node["size"] = list(node_size(ctype, len(node["inputs"]), len(node["outputs"]),
                                      len(node["widgets_values"]), multiline))  # fmt: skip
        self.hints[nid] = (row, col)
        self.nodes.append(node)
        for name, src in links.items():
            self.connect(src, nid, name)
        return nid

    def connect(self, src: tuple[int, int], target: int, name: str) -> None:
        origin, slot = src
        onode = self.nodes[origin - 1]
        tnode = self.nodes[target - 1]
        lid = len(self.links) + 1
        ltype = onode["outputs"][slot]["type"]
        onode["outputs"][slot]["links"].append(lid)
        inputs = tnode["inputs"]
        idx = next(i for i, s in enumerate(inputs) if s["name"] == name)
        inputs[idx]["link"] = lid
        self.links.append([lid, origin, slot, target, idx, ltype])

    def note(self, text: str, col: float, row: float, width: int = 340) -> None:
        nid = len(self.nodes) + 1
        self.hints[nid] = (row, col)
        self.nodes.append({"id": nid, "type": "Note", "pos": [0, 0], "size": [width, 200],
                           "flags": {}, "order": nid - 1, "mode": 0, "properties": {}, "inputs": [], "outputs": [],
                           "widgets_values": [text], "color": "#432", "bgcolor": "#653"})  # fmt: skip

    def ui(self) -> dict:
        self.groups = layout(self.nodes, self.links, self.hints)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {}, "extra": {}, "version": 0.4}  # fmt: skip


# ---- layout: a function of the graph (links, node kinds), so graph edits never need hand placement ----------
TITLE_H = 30  # LiteGraph draws a node's title bar above its pos
GROUP_TITLE_H = 50  # room for a group's title (font 24) above the first node's title bar
GAP_X, GAP_Y = 70, 40
NODE_W = 330
# Nodes that show pictures or tables after a run, with the room it takes: their size is the size after a run,
# so nothing grows into a neighbour when the previews arrive.
IMAGE_PREVIEW = {
    "SaveImage",
    "PreviewImage",
    "CXRImageLoader",
}  # one picture, about as tall as the node is wide
PANEL_H = {"CXRMetrics": 360, "AttentionMapRender": 340, "CXRPrompt": 200}  # read-only panels (js/)
WIDE = {"CXRMetrics": 380, "AttentionMapRender": 380, "CXRPrompt": 400}
# Stages, left to right, each drawn as one titled group. A node's stage is its kind's stage, or later if
# one of its inputs comes from a later stage (links never run right to left between stages); nodes of
# other kinds (save nodes, core helpers) join the stage of their inputs.
STAGES = (
    ("Inputs: radiograph, organ masks, spatial prior", "#3f789e",
     {"CXRImageLoader", "OrganMaskLoader", "PathologySpatialPrior", "OrganMaskSplitLungs", "OrganMaskFromMask"}),
    ("Model, prompt and encoded radiograph", "#8a6f3f",
     {"CheckpointLoaderSimple", "CLIPTextEncode", "CXRPrompt", "VAEEncode"}),
    ("Attention regulation (bypass a node = ablation)", "#88aa88",
     {"AnatomyAttentionGate", "PathologyCrossAttnReweight", "EnergyLatentCorrector", "AttentionMapCapture"}),
    ("Sampling", "#7a5c9e", {"KSampler", "KSamplerAdvanced", "SetLatentNoiseMask", "VAEDecode"}),
    ("Results: metrics and attention maps", "#a1584f", {"CXRMetrics", "AttentionMapRender"}),
)  # fmt: skip


def node_size(ctype: str, n_inputs: int, n_outputs: int, n_widgets: int, multiline: int) -> tuple[int, int]:
    """Estimated size (width, body height) of a node after a run: sockets, widgets, then previews/panels."""
    width = WIDE.get(ctype, NODE_W)
    height = 12 + 22 * max(n_inputs, n_outputs) + 26 * n_widgets + 70 * multiline
    if ctype in IMAGE_PREVIEW:
        height += width + 10
    height += PANEL_H.get(ctype, 0)
    if ctype == "CXRMetrics":
        height += width  # the difference heat map under the table
    return width, height


def _stage_of(nodes: list, links: list) -> dict[int, int]:
    kind = {
        n["id"]: next((i for i, (_, _, kinds) in enumerate(STAGES) if n["type"] in kinds), None)
        for n in nodes
    }
    sources: dict[int, list[int]] = {n["id"]: [] for n in nodes}
    for _, origin, _, target, _, _ in links:
        sources[target].append(origin)
    stage: dict[int, int] = {}

    def visit(nid: int) -> int:
        if nid not in stage:
            upstream = [visit(s) for s in sources[nid]]
            stage[nid] = max([kind[nid] if kind[nid] is not None else 0, *upstream])
        return stage[nid]

    for n in nodes:
        visit(n["id"])
    return stage


def layout(nodes: list, links: list, hints: dict) -> list[dict]:
    """Place every node (pos) from the links and the nodes' sizes; returns the stage groups.

    Stages are column blocks left to right; inside a stage a node's column is
    its longest chain of links from the stage's first nodes, and the nodes of
    one column are stacked in the order of their hints. Notes go left of it all.
    """
    graph_nodes = [n for n in nodes if n["type"] != "Note"]
    stage = _stage_of(graph_nodes, links)
    sources: dict[int, list[int]] = {n["id"]: [] for n in graph_nodes}
    for _, origin, _, target, _, _ in links:
        sources[target].append(origin)
    depth: dict[int, int] = {}

    def col(nid: int) -> int:
        if nid not in depth:
            inside = [col(s) + 1 for s in sources[nid] if stage[s] == stage[nid]]
            depth[nid] = max(inside, default=0)
        return depth[nid]

    groups, x = [], 0
    for si, (title, colour, _) in enumerate(STAGES):
        members = [n for n in graph_nodes if stage[n["id"]] == si]
        if not members:
            continue
        x0 = x
        for c in sorted({col(n["id"]) for n in members}):
            column = sorted(
                (n for n in members if col(n["id"]) == c), key=lambda n: (hints[n["id"]], n["id"])
            )
            y = 0
            for n in column:
                n["pos"] = [x, y + TITLE_H]
                y += TITLE_H + n["size"][1] + GAP_Y
            x += max(n["size"][0] for n in column) + GAP_X
        top = -GROUP_TITLE_H
        bottom = max(n["pos"][1] + n["size"][1] for n in members) + 20
        groups.append({"title": title, "bounding": [x0 - 20, top, x - x0 - GAP_X + 40, bottom - top],
                       "color": colour, "font_size": 24})  # fmt: skip
        x += 40
    note_y = 0
    for n in (n for n in nodes if n["type"] == "Note"):
        n["pos"] = [-n["size"][0] - 80, note_y + TITLE_H]
        note_y += TITLE_H + n["size"][1] + GAP_Y
    return groups


def _combo_options(info: dict, ctype: str, name: str) -> list:
    node = info[ctype]["input"]
    spec = node.get("required", {}).get(name) or node.get("optional", {}).get(name)
    return spec[0] if isinstance(spec[0], list) else spec[1].get("options", [""])


def build(info: dict, variant: str) -> Graph:
    g = Graph(info)
    add = g.add
    img = add("CXRImageLoader", "Radiograph", 0, 0, image="RG1_UNCR.dcm", working_size=512)
    masks = add("OrganMaskLoader", "Organ masks", 0, 1, source="label_map", path="RG1_UNCR_labels.png",
                organs="right_lung, left_lung, heart, mediastinum", geometry=(img, 1), image=(img, 0))  # fmt: skip
    prior = add("PathologySpatialPrior", "Spatial prior", 0, 2.7, organ_masks=(masks, 0), pathology="effusion",
                side="left", extent=0.35, feather_px=8.0, image=(img, 0))  # fmt: skip
    ckpt = add("CheckpointLoaderSimple", "Checkpoint", 1, 0, ckpt_name=CKPT)
    # the prompt is typed once: its conditioning feeds the sampler, its regulated words the attention nodes
    pos = add("CXRPrompt", "Positive prompt", 1, 0.6, text=PROMPT, pathology_words=WORDS, anatomy_words="",
              clip=(ckpt, 1))  # fmt: skip
    neg = add("CLIPTextEncode", "Negative prompt", 1, 1.2, text="", clip=(ckpt, 1))
    enc = add("VAEEncode", "Encode radiograph", 1, 1.8, pixels=(img, 0), vae=(ckpt, 2))
    model = (ckpt, 0)
    method = variant not in ("baseline_sd_inpainting", "baseline_pie_progressive")
    if method:
        bypass = {"ablation_no_gate": {"gate"}, "ablation_no_reweight": {"reweight"},
                  "ablation_no_correction": {"correct"}, "plain_sdedit": {"gate", "reweight", "correct"}}.get(variant, set())  # fmt: skip
        gate = add("AnatomyAttentionGate", "Anatomy gate", 2, 0, mode=4 if "gate" in bypass else 0,
                   model=model, organ_masks=(masks, 0), organs="all")  # fmt: skip
        rew = add("PathologyCrossAttnReweight", "Pathology reweight", 2, 1.1, mode=4 if "reweight" in bypass else 0,
                  model=(gate, 0), prompt=(pos, 1), prior=(prior, 0))  # fmt: skip
        cor = add("EnergyLatentCorrector", "Latent correction", 2, 2.1, mode=4 if "correct" in bypass else 0,
                  model=(rew, 0), prompt=(pos, 1), prior=(prior, 0))  # fmt: skip
        cap = add("AttentionMapCapture", "Attention capture", 2, 3.3, model=(cor, 0), prompt=(pos, 1),
                  words="")  # empty: the prompt's pathology words  # fmt: skip
        ks = add("KSampler", "Sampler", 3, 0, model=(cap, 0), positive=(pos, 0), negative=(neg, 0),
                 latent_image=(enc, 0), seed=42, steps=20, cfg=5.0, sampler_name="euler", scheduler="normal",
                 denoise=0.6)  # fmt: skip
        dec = add("VAEDecode", "Decode", 3, 1, samples=(ks, 0), vae=(ckpt, 2))
        result = (dec, 0)
        heat = add("AttentionMapRender", "Attention heatmaps", 4, 2.2, attention_maps=(cap, 1), image=result)
        add("SaveImage", "Save heatmaps", 5, 2.2, images=(heat, 0), filename_prefix="cxr/attention")
    elif variant == "baseline_sd_inpainting":
        masked = add("SetLatentNoiseMask", "Mask the region", 2, 0, samples=(enc, 0), mask=(prior, 0))
        ks = add("KSampler", "Sampler", 3, 0, model=model, positive=(pos, 0), negative=(neg, 0),
                 latent_image=(masked, 0), seed=42, steps=20, cfg=5.0, sampler_name="euler", scheduler="normal",
                 denoise=0.8)  # fmt: skip
        dec = add("VAEDecode", "Decode", 3, 1, samples=(ks, 0), vae=(ckpt, 2))
        result = (dec, 0)
    else:  # PIE-style progressive editing: repeated masked SDEdit, blended back into the original
        current = (img, 0)
        for r in range(3):
            e = add("VAEEncode", f"Encode round {r + 1}", 2 + r, 0, pixels=current, vae=(ckpt, 2))
            m = add("SetLatentNoiseMask", f"Mask round {r + 1}", 2 + r, 0.5, samples=(e, 0), mask=(prior, 0))
            ks = add("KSampler", f"Sampler round {r + 1}", 2 + r, 1, model=model, positive=(pos, 0),
                     negative=(neg, 0), latent_image=(m, 0), seed=42 + r, steps=20, cfg=5.0, sampler_name="euler",
                     scheduler="normal", denoise=0.45)  # fmt: skip
            d = add("VAEDecode", f"Decode round {r + 1}", 2 + r, 2.1, samples=(ks, 0), vae=(ckpt, 2))
            b = add("ImageCompositeMasked", f"Blend round {r + 1}", 2 + r, 2.6, destination=(img, 0), source=(d, 0),
                    mask=(prior, 0))  # fmt: skip
            current = (b, 0)
        result = current
    col = 4 if method else 5
    add("SaveImage", "Save counterfactual", col, 0, images=result, filename_prefix=f"cxr/{variant}")
    met = add("CXRMetrics", "Metrics", col, 1, original=(img, 0), counterfactual=result, target_region=(prior, 0),
              organ_masks=(masks, 0), target_organs="left_lung", run_tag=variant, csv_name="cxr/metrics.csv")  # fmt: skip
    add("SaveImage", "Save difference map", col + 1, 1, images=(met, 1), filename_prefix="cxr/difference")
    add("SaveImage", "Save mask overlay", 1, 2.4, images=(masks, 2), filename_prefix="cxr/organ_masks")
    add("SaveImage", "Save prior overlay", 1, 3.4, images=(prior, 1), filename_prefix="cxr/prior")
    g.note(NOTES[variant], -1.1, 0, 360)
    return g


COMMON = ("Random weights prove mechanics, not medicine: choose your CXR-fine-tuned SD1.5 checkpoint in "
          "'Checkpoint'. Put RG1_UNCR.dcm (pydicom-data) and assets/demo/RG1_UNCR_labels.png + .json in "
          "ComfyUI's input folder, or load your own radiograph and masks.")  # fmt: skip
NOTES = {
    "cxr_counterfactual_full": "Full method (METHOD.md): organ masks gate self-attention (Anatomy gate), the "
    "pathology words' cross-attention is pulled into the spatial prior early on (Pathology reweight), and the "
    "latent is corrected down the attention-concentration energy (Latent correction). SDEdit from the encoded "
    "radiograph at denoise 0.6. Metrics score anatomy preservation and edit localisation. " + COMMON,
    "ablation_no_gate": "Ablation: the Anatomy gate is bypassed (purple); everything else as the full method. "
    + COMMON,
    "ablation_no_reweight": "Ablation: the Pathology reweight is bypassed; everything else as the full method. "
    + COMMON,
    "ablation_no_correction": "Ablation: the Latent correction is bypassed; everything else as the full method. "
    + COMMON,
    "plain_sdedit": "Plain SDEdit: all three regulation nodes bypassed; the output is bit-identical to sampling "
    "without them. The attention capture still records the pathology word for comparison. " + COMMON,
    "baseline_sd_inpainting": "Baseline: SD inpainting of the target region with core nodes (SetLatentNoiseMask "
    "with the prior, denoise 0.8). " + COMMON,
    "baseline_pie_progressive": "Baseline: PIE-style progressive editing with core nodes: three rounds of masked "
    "SDEdit (denoise 0.45), each blended back into the original inside the prior. " + COMMON,
}


# Template titles: ComfyUI's template browser (frontend 1.32) names a custom node's template by its file stem and
# has no other title, description or order for it; the numbers order the cards (js/cxr_templates.js sorts them).
TEMPLATES = {
    "cxr_counterfactual_full": "1 Full method (gate, reweight, correction)",
    "ablation_no_gate": "2 Ablation, no anatomy gate",
    "ablation_no_reweight": "3 Ablation, no pathology reweight",
    "ablation_no_correction": "4 Ablation, no latent correction",
    "plain_sdedit": "5 Baseline, plain SDEdit (regulation bypassed)",
    "baseline_sd_inpainting": "6 Baseline, SD inpainting",
    "baseline_pie_progressive": "7 Baseline, PIE progressive editing",
}
VARIANTS = tuple(NOTES)


def main() -> int:
    import argparse
    import shutil

    ap = argparse.ArgumentParser(
        description="Generate example_workflows/ (editor files, API twins, thumbnails)."
    )
    ap.add_argument("--keep-thumbnails", action="store_true", help="write the graphs only and keep the committed "
                    "thumbnails (for a change that cannot alter the outputs, e.g. a widget default renamed)")  # fmt: skip
    keep = ap.parse_args().keep_thumbnails

    from cxr_pack.cxr_runner.client import ComfyClient
    from cxr_pack.cxr_runner.server import LocalComfyServer

    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        sys.exit("COMFYUI_DIR is not set; run: source $(bash scripts/setup_host.sh | tail -1)")
    ckpt_dir = CACHE / "checkpoints"
    if not (ckpt_dir / CKPT).is_file():
        sys.exit(f"{ckpt_dir / CKPT} is missing; generate it with scripts/make_random_checkpoint.py")
    from cxr_pack.cxr_core.demo_assets import demo_label_map_path, demo_legend_path, demo_radiograph_path

    for old in [*OUT.glob("*.json"), *([] if keep else OUT.glob("*.jpg"))]:
        old.unlink()
    with LocalComfyServer(comfyui_dir=Path(comfy_dir), python=sys.executable,
                          model_dirs={"checkpoints": [str(ckpt_dir)]}) as server:  # fmt: skip
        for src, name in ((demo_radiograph_path(), "RG1_UNCR.dcm"), (demo_label_map_path(), "RG1_UNCR_labels.png"),
                          (demo_legend_path(), "RG1_UNCR_labels.json")):  # fmt: skip
            shutil.copy(src, server.input_dir / name)
        client = ComfyClient(server.base_url)
        info = client.object_info()
        for variant in VARIANTS:
            ui = build(info, variant).ui()
            ui["extra"]["cxr_variant"] = variant  # the API twin's name, for tests and scripts
            problems = validate_ui(ui, info)
            if problems:
                sys.exit(f"{variant}: {problems}")
            title = TEMPLATES[variant]
            api = ui_to_api(ui, info)
            (OUT / f"{title}.json").write_text(json.dumps(ui, indent=1) + "\n")
            (OUT / "api" / f"{variant}.json").write_text(json.dumps(api, indent=1) + "\n")
            if keep and not (OUT / f"{title}.jpg").is_file():
                sys.exit(f"--keep-thumbnails: {title}.jpg is missing; run without it to make the thumbnails")
            if not keep:
                output_thumbnail(title, run_for_thumbnail(client, api, variant), OUT / f"{title}.jpg")
            print(
                f"wrote example_workflows/{title}.json (+ api/{variant}.json{'' if keep else ', thumbnail'})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
