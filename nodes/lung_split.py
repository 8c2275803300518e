"""OrganMaskSplitLungs: a both-lungs organ becomes the patient's right_lung and left_lung.

The split is in cxr_core/lung_split.py.
"""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from ..cxr_core.lung_split import split_lungs
from ..cxr_core.organ_masks import OrganMaskError, OrganMasks
from .sockets import CATEGORY, OrganMasksIO
from .validation import require_finite


class OrganMaskSplitLungs(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OrganMaskSplitLungs",
            display_name="Organ Mask Split Lungs",
            category=f"{CATEGORY}/masks",
            description="Split an organ that holds both lungs (many public masks and segmenters give one) into "
            "the patient's right_lung and left_lung, by connected components and the image midline: on a PA or "
            "AP film the patient's right lung is on the image's left. Refuses ambiguous masks, saying why.",
            inputs=[
                OrganMasksIO.Input("organ_masks", tooltip="A set with one organ holding both lungs."),
                io.String.Input(
                    "organ",
                    default="lungs",
                    tooltip="The organ that holds both lungs; 'lungs', 'lung' and 'both lungs' find each other.",
                ),
                io.Float.Input(
                    "threshold",
                    default=0.5,
                    min=0.01,
                    max=0.99,
                    step=0.01,
                    tooltip="A pixel is lung when its value is >= this; soft values are kept in the outputs.",
                ),
            ],
            outputs=[
                OrganMasksIO.Output(
                    display_name="ORGAN_MASKS",
                    tooltip="The organ masks with right_lung and left_lung in place of the combined organ.",
                )
            ],
        )

    @classmethod
    def execute(cls, organ_masks: OrganMasks, organ: str = "lungs", threshold: float = 0.5) -> io.NodeOutput:
        require_finite(cls, locals())
        node = "OrganMaskSplitLungs"
        if not isinstance(organ_masks, OrganMasks):
            raise OrganMaskError(
                f"{node}: organ_masks must be ORGAN_MASKS, received {type(organ_masks).__name__}"
            )
        organ = _both_lungs_name(organ_masks, organ)
        if not organ_masks.has(organ):
            raise OrganMaskError(
                f"{node}: organ '{organ}' is not in the set {list(organ_masks.names)}; name the organ that holds "
                "both lungs"
            )
        for side in ("right_lung", "left_lung"):
            if organ_masks.has(side):
                raise OrganMaskError(f"{node}: the set already has '{side}'; nothing to split")
        both = organ_masks.get(organ).cpu().numpy()  # (B, H, W)
        pairs = [
            split_lungs(both[b], threshold, what=f"{node} '{organ}' (batch item {b})")
            for b in range(len(both))
        ]
        right = torch.from_numpy(np.stack([p[0] for p in pairs]))  # (B, H, W)
        left = torch.from_numpy(np.stack([p[1] for p in pairs]))
        keep = [n for n in organ_masks.names if n != organ_masks.names[organ_masks.index(organ)]]
        rest = organ_masks.masks[:, [organ_masks.index(n) for n in keep]]
        b = max(rest.shape[0], right.shape[0])
        masks = torch.cat(
            [right.unsqueeze(1).expand(b, -1, -1, -1), left.unsqueeze(1).expand(b, -1, -1, -1),
             rest.expand(b, -1, -1, -1)], dim=1,
        ).to(organ_masks.masks)  # fmt: skip
        return io.NodeOutput(
            OrganMasks(
                names=("right_lung", "left_lung", *keep),
                masks=masks,
                image_size=organ_masks.image_size,
                scheme=organ_masks.scheme,
                meta={**organ_masks.meta, "lungs_split_from": organ},
            )
        )


def _both_lungs_name(organ_masks: OrganMasks, organ: str) -> str:
    """The set's name for the both-lungs organ: ``organ`` itself, or another spelling of 'lungs'."""
    spellings = ("lungs", "lung", "both_lungs", "both lungs")
    if organ_masks.has(organ) or organ.strip().lower() not in spellings:
        return organ
    return next((s for s in spellings if organ_masks.has(s)), organ)


NODES: list[type[io.ComfyNode]] = [OrganMaskSplitLungs]
