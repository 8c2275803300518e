"""PathologySpatialPrior: the target region of a pathology, from organ masks (docs/METHOD.md section 5).

The regions are built in cxr_core/priors.py (``build_prior``).
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..cxr_core.mask_overlay import PRIOR_COLOUR, organ_colour, overlay_masks
from ..cxr_core.organ_masks import OrganMasks
from ..cxr_core.priors import PATHOLOGIES, SIDES, ZONES, PriorError, build_prior
from .sockets import CATEGORY, OrganMasksIO
from .validation import require_finite


class PathologySpatialPrior(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PathologySpatialPrior",
            display_name="Pathology Spatial Prior",
            category=f"{CATEGORY}/inputs",
            description="Target region for the counterfactual lesion, built from organ masks: effusion (lung "
            "base with a meniscus), pneumothorax (apical/lateral band), consolidation/opacity (a zone shrunk to "
            "the extent), cardiomegaly (heart widened), edema (bilateral perihilar), atelectasis (basal wedge) "
            "or a custom MASK. Extent sets the size, side and zone the place; the edge is feathered.",
            inputs=[
                OrganMasksIO.Input(
                    "organ_masks",
                    tooltip="Organ masks of the image (needs right_lung / left_lung; heart for "
                    "cardiomegaly).",
                ),  # fmt: skip
                io.Combo.Input(
                    "pathology",
                    options=list(PATHOLOGIES),
                    default="effusion",
                    tooltip="Which region to build; 'custom' passes custom_mask through (feathered).",
                ),  # fmt: skip
                io.Combo.Input(
                    "side",
                    options=list(SIDES),
                    default="right",
                    tooltip="The PATIENT's side (on a PA view the patient's left lung is on the image's right). "
                    "Ignored by cardiomegaly (central) and edema (always bilateral).",
                ),  # fmt: skip
                io.Float.Input(
                    "extent",
                    default=0.35,
                    min=0.01,
                    max=1.0,
                    step=0.01,
                    tooltip="Lesion extent e in (0, 1]: effusion height fraction, pneumothorax band width, "
                    "consolidation area fraction of the zone, cardiomegaly widening (x heart width), edema "
                    "perihilar reach, atelectasis wedge size. Larger never shrinks the region.",
                ),  # fmt: skip
                io.Float.Input(
                    "feather_px",
                    default=8.0,
                    min=0.0,
                    max=64.0,
                    step=0.5,
                    tooltip="Gaussian edge, sigma in pixels of the image (0-64; 0 = hard edge).",
                ),  # fmt: skip
                io.Combo.Input(
                    "zone",
                    options=list(ZONES),
                    default="lower",
                    tooltip="consolidation/opacity only: upper, middle or lower third of the lung by height.",
                ),  # fmt: skip
                io.Mask.Input(
                    "custom_mask",
                    optional=True,
                    tooltip="pathology 'custom' only: the region, a MASK at the image's size in [0, 1].",
                ),  # fmt: skip
                io.Image.Input("image", optional=True, tooltip="Drawn under the preview."),
            ],
            outputs=[
                io.Mask.Output(display_name="prior", tooltip="(B, H, W) target region in [0, 1]."),
                io.Image.Output(
                    display_name="preview", tooltip="Prior in red over the image and lungs/heart."
                ),
            ],
        )

    @classmethod
    def execute(
        cls, organ_masks: OrganMasks, pathology: str = "effusion", side: str = "right", extent: float = 0.35,
        feather_px: float = 8.0, zone: str = "lower", custom_mask: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
    ) -> io.NodeOutput:  # fmt: skip
        require_finite(cls, locals())
        try:
            prior = build_prior(
                organ_masks, pathology, side, extent, feather_px, zone, custom_mask
            )  # (B, H, W)
        except PriorError as exc:  # name the node: the message names the input
            raise PriorError(f"PathologySpatialPrior: {exc}") from exc
        outlines = [n for n in ("right_lung", "left_lung", "heart") if organ_masks.has(n)]
        layers = [organ_masks.get(n).float().cpu() * 0.35 for n in outlines]
        b = max(prior.shape[0], *(m.shape[0] for m in layers)) if layers else prior.shape[0]
        stack = torch.stack([m.expand(b, -1, -1) for m in [*layers, prior.cpu()]], dim=1)  # (B, K+1, H, W)
        colours = [organ_colour(n) for n in outlines] + [PRIOR_COLOUR]
        if image is not None and tuple(image.shape[1:3]) != tuple(prior.shape[-2:]):
            raise ValueError(
                f"PathologySpatialPrior: image is {tuple(image.shape[1:3])} (H, W) but the organ masks are "
                f"{tuple(prior.shape[-2:])}; connect the image these masks were loaded for"
            )
        preview = overlay_masks(image, stack, colours, alpha=0.6)
        return io.NodeOutput(prior, preview)


NODES: list[type[io.ComfyNode]] = [PathologySpatialPrior]
