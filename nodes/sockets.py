"""Socket types of this pack, declared once for every node."""

from __future__ import annotations

from comfy_api.latest import io

# Named soft organ masks at image resolution (cxr_core.organ_masks.OrganMasks).
OrganMasksIO = io.Custom("ORGAN_MASKS")

# How a radiograph was resized and padded to its working size (cxr_core.geometry.ImageGeometry).
GeometryIO = io.Custom("CXR_GEOMETRY")

CATEGORY = "CXR Counterfactual"

# A prompt as encoded for the sampler, with its regulated words' token positions
# (cxr_core.attention.prompt.RegulatedPrompt).
PromptIO = io.Custom("CXR_PROMPT")
