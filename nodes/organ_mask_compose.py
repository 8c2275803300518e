"""OrganMaskFromMask: add one organ, given as a core MASK, to an ORGAN_MASKS set.

Lets any segmentation node of any pack feed the attention nodes: chain one of
these per organ.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..cxr_core.organ_masks import OrganMaskError, OrganMasks
from .sockets import CATEGORY, OrganMasksIO


class OrganMaskFromMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OrganMaskFromMask",
            display_name="Organ Mask From MASK",
            category=f"{CATEGORY}/masks",
            description="Add one organ, given as a MASK at image resolution, to an ORGAN_MASKS set "
            "(or start a new set). Chain one per organ to bring masks from any segmentation node.",
            inputs=[
                io.Mask.Input("mask", tooltip="Soft or binary organ mask in [0,1], (H, W) or (B, H, W)."),
                io.String.Input(
                    "organ",
                    default="left_lung",
                    tooltip="Organ name; synonyms such as 'left lung', 'lung_left' or 'L lung' are accepted. "
                    "Left and right are the patient's.",
                ),
                OrganMasksIO.Input(
                    "organ_masks", optional=True, tooltip="Set to extend; omit to start a new one."
                ),
            ],
            outputs=[
                OrganMasksIO.Output(
                    display_name="ORGAN_MASKS", tooltip="The set with this organ added (or replaced)."
                )
            ],
        )

    @classmethod
    def execute(cls, mask: torch.Tensor, organ: str, organ_masks: OrganMasks | None = None) -> io.NodeOutput:
        m = mask if mask.ndim == 3 else mask.unsqueeze(0)  # (B, H, W)
        if organ_masks is None:
            return io.NodeOutput(
                OrganMasks(
                    names=(organ,), masks=m.unsqueeze(1), image_size=tuple(m.shape[-2:]), scheme="custom"
                )
            )
        if organ_masks.has(organ):
            raise OrganMaskError(
                f"OrganMaskFromMask: organ '{organ}' is already in the set {list(organ_masks.names)}; "
                "give each organ once"
            )
        if tuple(m.shape[-2:]) != organ_masks.image_size:
            raise OrganMaskError(
                f"OrganMaskFromMask: mask is {tuple(m.shape[-2:])} (H, W) but the ORGAN_MASKS set is "
                f"{organ_masks.image_size}; resize the mask to the image first"
            )
        base = organ_masks.masks
        if base.shape[0] != m.shape[0] and 1 not in (base.shape[0], m.shape[0]):
            raise OrganMaskError(
                f"OrganMaskFromMask: batch of {m.shape[0]} masks cannot join a set of batch {base.shape[0]}"
            )
        b = max(base.shape[0], m.shape[0])
        stacked = torch.cat(
            [base.expand(b, -1, -1, -1), m.to(base).unsqueeze(1).expand(b, -1, -1, -1)], dim=1
        )
        return io.NodeOutput(
            OrganMasks(
                names=(*organ_masks.names, organ),
                masks=stacked,
                image_size=organ_masks.image_size,
                scheme=organ_masks.scheme,
                meta=dict(organ_masks.meta),
            )
        )


NODES: list[type[io.ComfyNode]] = [OrganMaskFromMask]
