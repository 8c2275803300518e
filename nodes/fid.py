"""FID across many prompts: accumulate feature statistics per named set, then compare two sets.

Thin V3 nodes over ``cxr_core.metrics.fid``. Statistics live in
``<output>/cxr_fid/<study>/<set>.safetensors``; every prompt adds its images under
a file lock. Features come from a CLIP_VISION model or from an Inception-v3
weight file in models/inception (CXRInceptionLoader); nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import os

import folder_paths
import torch
from comfy_api.latest import io

from ..cxr_core.metrics.features import ClipVisionFeatures, FeatureExtractor
from ..cxr_core.metrics.fid import FeatureStats, accumulate, check_set_name, fid_report, stats_path
from ..cxr_core.metrics.inception import InceptionFeatures, load_inception
from ..cxr_core.metrics.prep import check_image
from .model_files import INCEPTION, weight_files, weight_path
from .sockets import CATEGORY, InceptionIO

log = logging.getLogger("cxr_counterfactual.nodes.fid")

_STUDY_TIP = "Study name: sets of one study are compared with each other (letters, digits, '_', '-', '.')."


class CXRInceptionLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CXRInceptionLoader",
            display_name="CXR Inception-v3 Loader (FID features)",
            category=f"{CATEGORY}/metrics",
            description="Load Inception-v3 (torchvision architecture) from a weight file in models/inception "
            "for FID features: pytorch-fid's pt_inception weights or torchvision's ImageNet weights, as "
            "safetensors or a weights-only state dict. Never downloads.",
            inputs=[
                io.Combo.Input(
                    "weights",
                    options=weight_files(INCEPTION),
                    tooltip="Inception-v3 weight file in models/inception (or an 'inception:' entry of "
                    "extra_model_paths.yaml).",
                ),
            ],
            outputs=[
                InceptionIO.Output(
                    display_name="inception", tooltip="The Inception feature extractor for the FID nodes."
                )
            ],
        )

    @classmethod
    def execute(cls, weights: str) -> io.NodeOutput:
        return io.NodeOutput(load_inception(weight_path(INCEPTION, weights, "weights")))


def _extractor(clip_vision: object | None, inception: InceptionFeatures | None) -> FeatureExtractor:
    if (clip_vision is None) == (inception is None):
        got = "both" if clip_vision is not None else "neither"
        raise ValueError(
            f"CXRFIDAccumulate: expected exactly one feature extractor, clip_vision or inception, received {got}"
        )
    return ClipVisionFeatures(clip_vision) if clip_vision is not None else inception


class CXRFIDAccumulate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CXRFIDAccumulate",
            display_name="CXR FID Accumulate",
            category=f"{CATEGORY}/metrics",
            description="Add the images' features to the running statistics of a named set ('real', "
            "'generated', ...) of a study, stored in the output folder. Queue one prompt per image or "
            "batch; then compare two sets with CXR FID Compute.",
            is_output_node=True,
            inputs=[
                io.Image.Input(
                    "images", tooltip="Images to add to the set (any size; grey is repeated to RGB)."
                ),
                io.String.Input("study", default="study", tooltip=_STUDY_TIP),
                io.String.Input(
                    "set_name",
                    default="generated",
                    tooltip="The set these images belong to, e.g. 'real' or 'generated' (or an ablation name).",
                ),
                io.ClipVision.Input(
                    "clip_vision",
                    optional=True,
                    tooltip="Features from this CLIP vision model (image_embeds).",
                ),
                InceptionIO.Input(
                    "inception", optional=True, tooltip="Features from Inception-v3 (2048-d pool features)."
                ),
            ],
            outputs=[
                io.String.Output(display_name="summary_json", tooltip="The set's sample count and extractor.")
            ],
        )

    @classmethod
    def execute(
        cls,
        images: torch.Tensor,
        study: str,
        set_name: str,
        clip_vision: object | None = None,
        inception: InceptionFeatures | None = None,
    ) -> io.NodeOutput:
        path = stats_path(folder_paths.get_output_directory(), study, set_name)
        extractor = _extractor(clip_vision, inception)
        imgs = check_image(images, "images")
        feats = extractor.features(imgs)  # (B, D)
        total = accumulate(path, FeatureStats.from_features(feats, extractor.info))
        summary = {
            "study": study.strip(),
            "set": set_name.strip(),
            "added": int(imgs.shape[0]),
            "n": total.n,
            "feature_dim": total.dim,
            "extractor": total.extractor.as_dict(),
            "file": os.path.relpath(path, folder_paths.get_output_directory()),
        }
        text = [f"FID set {summary['study']}/{summary['set']}: +{summary['added']} -> n = {total.n} "
                f"({total.extractor.name}, {total.dim}-d)"]  # fmt: skip
        if total.n < total.dim:
            text.append(f"n < feature dimension {total.dim}: keep adding before trusting FID")
        return io.NodeOutput(json.dumps(summary), ui={"cxr_fid": [summary], "text": text})


class CXRFIDCompute(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CXRFIDCompute",
            display_name="CXR FID Compute",
            category=f"{CATEGORY}/metrics",
            description="Frechet distance between two accumulated sets of a study, with how many samples back "
            "each; warns when a set has fewer samples than the feature dimension.",
            is_output_node=True,
            inputs=[
                io.String.Input("study", default="study", tooltip=_STUDY_TIP),
                io.String.Input("set_a", default="real", tooltip="First set (usually the real images)."),
                io.String.Input(
                    "set_b", default="generated", tooltip="Second set (usually the counterfactuals)."
                ),
            ],
            outputs=[
                io.Float.Output(
                    display_name="fid", tooltip="The Frechet distance (squared, as FID is reported)."
                ),
                io.String.Output(
                    display_name="report_json", tooltip="FID, sample counts, extractor, warnings."
                ),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, study: str, set_a: str, set_b: str) -> str:
        """Recompute whenever either statistics file changed (the inputs alone do not change)."""
        out = folder_paths.get_output_directory()
        parts = []
        for name in (set_a, set_b):
            try:
                st = os.stat(stats_path(out, study, name))
                parts.append(f"{st.st_mtime_ns}:{st.st_size}")
            except (OSError, ValueError):
                parts.append("missing")
        return "|".join(parts)

    @classmethod
    def execute(cls, study: str, set_a: str, set_b: str) -> io.NodeOutput:
        study, set_a, set_b = (
            check_set_name(v, k) for k, v in (("study", study), ("set_a", set_a), ("set_b", set_b))
        )
        report = fid_report(folder_paths.get_output_directory(), study, set_a, set_b)
        text = [
            f"FID {study}: {set_a} (n={report['n_a']}) vs {set_b} (n={report['n_b']}) = {report['fid']:.4f}",
            f"features: {report['extractor']['name']}, {report['feature_dim']}-d",
            *[f"warning: {w}" for w in report["warnings"]],
        ]
        for w in report["warnings"]:
            log.warning(w)
        return io.NodeOutput(report["fid"], json.dumps(report), ui={"cxr_fid": [report], "text": text})


NODES: list[type[io.ComfyNode]] = [CXRInceptionLoader, CXRFIDAccumulate, CXRFIDCompute]
