"""Thumbnails of the example workflows: each workflow's own outputs from a short random-weights run.

Used by scripts/make_workflows.py (the server it starts runs each workflow once at these settings).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

THUMB_PX, THUMB_STEPS = 128, 4  # the thumbnails' run: the random checkpoint at 128 px, 4 steps
RANDOM_NOTE = "random weights: shows the mechanics, not medicine"


def output_thumbnail(title: str, panels: list[tuple[str, Image.Image]], path: Path) -> None:
    """The workflow's own outputs side by side, titled and labelled as a random-weights run."""
    side, pad, head, foot = 200, 8, 30, 22
    im = Image.new("RGB", (pad + len(panels) * (side + pad), head + side + foot + 16), (28, 28, 32))
    d = ImageDraw.Draw(im)
    d.text((pad, 8), title, fill=(240, 240, 240))
    for i, (label, pic) in enumerate(panels):
        pic = pic.convert("RGB")
        scale = side / max(pic.size)
        pic = pic.resize((round(pic.width * scale), round(pic.height * scale)), Image.Resampling.BILINEAR)
        x = pad + i * (side + pad) + (side - pic.width) // 2
        im.paste(pic, (x, head + (side - pic.height) // 2))
        d.text((pad + i * (side + pad), head + side + 4), label, fill=(200, 200, 200))
    d.text((pad, head + side + foot), RANDOM_NOTE, fill=(240, 180, 80))
    im.save(path, quality=88)


def run_for_thumbnail(client: object, api: dict, variant: str) -> list[tuple[str, Image.Image]]:
    """Queue the API workflow at thumbnail settings; its organ overlay, counterfactual and difference map."""
    import io

    from cxr_pack.cxr_runner.client import output_images
    from cxr_pack.cxr_runner.workflow_format import set_input

    api = json.loads(json.dumps(api))
    set_input(api, "Radiograph", "working_size", THUMB_PX)
    for node in api.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = THUMB_STEPS
    entry = client.run(api, timeout_s=900)
    by_prefix = {img["filename"].split("_0")[0]: img for img in output_images(entry)}
    panels = []
    for prefix, label in (
        ("organ_masks", "organ masks"),
        (variant, "counterfactual"),
        ("difference", "|difference|"),
    ):
        img = by_prefix[prefix]
        data = client.view(img["filename"], img["subfolder"], img["type"])
        panels.append((label, Image.open(io.BytesIO(data))))
    return panels
