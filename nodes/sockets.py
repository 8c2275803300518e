"""Socket types of this pack, declared once for every node (node files import them from here)."""

from __future__ import annotations

from comfy_api.latest import io

# Named soft organ masks at image resolution (cxr_core.organ_masks.OrganMasks).
OrganMasksIO = io.Custom("ORGAN_MASKS")

# How a radiograph was resized and padded to its working size (cxr_core.geometry.ImageGeometry).
GeometryIO = io.Custom("CXR_GEOMETRY")

# Recorded pathology-word attention of a run (cxr_core.attention.capture.AttentionMapStore).
AttentionMapsIO = io.Custom("CXR_ATTENTION_MAPS")

# An Inception-v3 feature extractor (cxr_core.metrics.inception.InceptionFeatures).
InceptionIO = io.Custom("CXR_INCEPTION")

# The loaded (or unavailable) torchxrayvision classifier (cxr_core.metrics.validity.ValidityClassifier).
ValidityClassifierIO = io.Custom("CXR_VALIDITY_CLASSIFIER")

CATEGORY = "CXR Counterfactual"

# A prompt as encoded for the sampler, with its regulated words' token positions
# (cxr_core.attention.prompt.RegulatedPrompt).
PromptIO = io.Custom("CXR_PROMPT")
