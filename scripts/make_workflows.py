"""Generate example_workflows/: editor (UI) workflows, their API twins and thumbnails.

    python scripts/make_workflows.py            # starts a local ComfyUI for /object_info

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

from import_pack import REPO, import_pack
from PIL import Image, ImageDraw

import_pack()  # cxr_runner only: it never imports ComfyUI
from cxr_pack.cxr_runner.workflow_format import input_specs, is_widget, ui_to_api, validate_ui  # noqa: E402

OUT = REPO / "example_workflows"
PROMPT = "chest x-ray, PA view, left pleural effusion"
WORDS = "pleural, effusion"
CKPT = "cxr_random_sd15_seed0.safetensors"
COL, ROW = 380, 120


@dataclass
class Graph:
    info: dict
    nodes: list = field(default_factory=list)
    links: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    bottoms: dict = field(default_factory=dict)  # column -> lowest y used, so nodes never overlap

    def add(self, ctype: str, title: str, col: float, row: float, mode: int = 0, **values) -> int:
        """Add a node; tuple values (node id, output slot) are links, the rest widget values."""
        links = {k: values.pop(k) for k in [k for k, v in values.items() if isinstance(v, tuple)]}
        nid = len(self.nodes) + 1
        specs = input_specs(self.info, ctype)
        node = {"id": nid, "type": ctype, "title": title, "pos": [col * COL, row * ROW], "mode": mode,
                "flags": {}, "order": nid - 1, "properties": {"Node name for S&R": ctype},
                "inputs": [], "outputs": [], "widgets_values": []}  # fmt: skip
        info = self.info[ctype]
        for slot, (otype, oname) in enumerate(zip(info["output"], info["output_name"], strict=True)):
            node["outputs"].append({"name": oname, "type": otype, "links": [], "slot_index": slot})
        for name, kind, opts in specs:
            value = values.pop(name, None)
            if is_widget(kind):
                if value is None:
                    value = opts.get("default")
                    if value is None and kind == "COMBO":
                        value = _combo_options(self.info, ctype, name)[0]
                node["widgets_values"].append(value)
                if opts.get("control_after_generate"):
                    node["widgets_values"].append("fixed")
            else:
                node["inputs"].append({"name": name, "type": kind, "link": None})
        if values:
            raise ValueError(f"{ctype}: unknown inputs {sorted(values)}")
        n_rows = len(node["inputs"]) + len(node["widgets_values"]) + len(node["outputs"])
        node["size"] = [320, 46 + 24 * n_rows]
        self._place(node, col)
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

    def _place(self, node: dict, col: float) -> None:
        y = max(node["pos"][1], self.bottoms.get(col, -1e9) + 40)
        node["pos"][1] = y
        self.bottoms[col] = y + node["size"][1]

    def note(self, text: str, col: float, row: float, width: int = 340) -> None:
        nid = len(self.nodes) + 1
        self.nodes.append({"id": nid, "type": "Note", "pos": [col * COL, row * ROW], "size": [width, 200],
                           "flags": {}, "order": nid - 1, "mode": 0, "properties": {}, "inputs": [], "outputs": [],
                           "widgets_values": [text], "color": "#432", "bgcolor": "#653"})  # fmt: skip

    def group(self, title: str, col0: float, col1: float, color: str) -> None:
        """A group around every node whose column lies in [col0, col1]."""
        inside = [n for n in self.nodes if col0 * COL <= n["pos"][0] <= col1 * COL]
        x0 = min(n["pos"][0] for n in inside) - 20
        y0 = min(n["pos"][1] for n in inside) - 60
        x1 = max(n["pos"][0] + n["size"][0] for n in inside) + 20
        y1 = max(n["pos"][1] + n["size"][1] for n in inside) + 20
        self.groups.append(
            {"title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": color, "font_size": 24}
        )

    def ui(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {}, "extra": {}, "version": 0.4}  # fmt: skip


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
    g.group("Inputs: radiograph, organ masks, spatial prior", 0, 1, "#3f789e")
    if method:
        g.group("Attention regulation (bypass a node = ablation)", 2, 2, "#8A8")
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


def thumbnail(ui: dict, path: Path) -> None:
    """A schematic of the graph: nodes as boxes (pack nodes green, bypassed purple), links as lines."""
    nodes = [n for n in ui["nodes"]]
    xs = [n["pos"][0] for n in nodes] + [n["pos"][0] + n["size"][0] for n in nodes]
    ys = [n["pos"][1] for n in nodes] + [n["pos"][1] + n["size"][1] for n in nodes]
    x0, y0, x1, y1 = min(xs) - 20, min(ys) - 60, max(xs) + 20, max(ys) + 20
    scale = 640 / (x1 - x0)
    im = Image.new("RGB", (640, int((y1 - y0) * scale) + 1), (32, 32, 36))
    d = ImageDraw.Draw(im)
    tr = lambda x, y: ((x - x0) * scale, (y - y0) * scale)  # noqa: E731
    for grp in ui["groups"]:
        bx, by, bw, bh = grp["bounding"]
        d.rectangle([*tr(bx, by), *tr(bx + bw, by + bh)], outline=grp["color"], width=2)
    byid = {n["id"]: n for n in nodes}
    for _, o, _, t, _, _ in ui["links"]:
        a, b = byid[o], byid[t]
        d.line([tr(a["pos"][0] + a["size"][0], a["pos"][1] + 20), tr(b["pos"][0], b["pos"][1] + 20)],
               fill=(150, 150, 160), width=1)  # fmt: skip
    for n in nodes:
        pack = n["type"] in PACK_TYPES
        fill = (90, 60, 120) if n["mode"] == 4 else (60, 110, 70) if pack else (70, 70, 78)
        if n["type"] == "Note":
            fill = (100, 80, 50)
        d.rounded_rectangle([*tr(*n["pos"]), *tr(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])],
                            radius=4, fill=fill, outline=(200, 200, 200))  # fmt: skip
        d.text(tr(n["pos"][0] + 8, n["pos"][1] + 6), n.get("title", n["type"])[:28], fill=(240, 240, 240))
    im.save(path, quality=88)


PACK_TYPES = {"CXRImageLoader", "OrganMaskLoader", "PathologySpatialPrior", "AnatomyAttentionGate",
              "PathologyCrossAttnReweight", "EnergyLatentCorrector", "AttentionMapCapture", "AttentionMapRender",
              "CXRMetrics"}  # fmt: skip
VARIANTS = tuple(NOTES)


def main() -> int:
    from cxr_pack.cxr_runner.client import ComfyClient
    from cxr_pack.cxr_runner.server import LocalComfyServer

    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        sys.exit("COMFYUI_DIR is not set; run: source $(bash scripts/setup_host.sh | tail -1)")
    with LocalComfyServer(comfyui_dir=Path(comfy_dir), python=sys.executable) as server:
        info = ComfyClient(server.base_url).object_info()
    for variant in VARIANTS:
        ui = build(info, variant).ui()
        problems = validate_ui(ui, info)
        if problems:
            sys.exit(f"{variant}: {problems}")
        (OUT / f"{variant}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (OUT / "api" / f"{variant}.json").write_text(json.dumps(ui_to_api(ui, info), indent=1) + "\n")
        thumbnail(ui, OUT / f"{variant}.jpg")
        print(f"wrote example_workflows/{variant}.json (+ api twin, thumbnail)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
