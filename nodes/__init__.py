"""V3 node classes of the pack. Nodes only parse inputs and call into cxr_core."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import (
    anatomy_gate,
    attention_capture,
    cxr_prompt,
    energy_corrector,
    fid,
    lung_split,
    metrics,
    organ_mask_compose,
    organ_mask_loader,
    pathology_reweight,
    radiograph_loader,
    spatial_prior,
)

_NODE_MODULES = (
    radiograph_loader,
    organ_mask_loader,
    spatial_prior,
    organ_mask_compose,
    lung_split,
    cxr_prompt,
    anatomy_gate,
    pathology_reweight,
    energy_corrector,
    attention_capture,
    metrics,
    fid,
)


class CXRCounterfactualExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in _NODE_MODULES for node in module.NODES]


async def comfy_entrypoint() -> CXRCounterfactualExtension:
    return CXRCounterfactualExtension()
