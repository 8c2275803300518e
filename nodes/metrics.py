"""CXRMetrics: anatomy preservation, edit localisation, CLIP-I and validity of a counterfactual.

Thin V3 nodes over ``cxr_core.metrics`` (definitions in the README's Metrics
section): the metrics node reports one JSON record per image, draws the
difference figure, shows both in the UI and appends rows to a CSV in ComfyUI's
output folder. The loader provides the optional validity classifier.
"""

from __future__ import annotations

import json
import logging

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..cxr_core.metrics.csv_log import append_records
from ..cxr_core.metrics.diff_heatmap import difference_figure
from ..cxr_core.metrics.features import clip_i
from ..cxr_core.metrics.image_scores import pair_scores
from ..cxr_core.metrics.locking import safe_output_path
from ..cxr_core.metrics.prep import MetricInputError, check_mask, pair_images, to_grey
from ..cxr_core.metrics.report import build_record, summary_lines
from ..cxr_core.metrics.validity import ValidityClassifier, load_xrv_classifier, validity_record
from ..cxr_core.metrics_table import metrics_table
from ..cxr_core.organ_masks import OrganMasks
from ..cxr_core.organ_names import normalise_organ_name
from .model_files import CLASSIFIERS, weight_files, weight_path
from .sockets import CATEGORY, OrganMasksIO, ValidityClassifierIO

log = logging.getLogger("cxr_counterfactual.nodes.metrics")


def _organs_for_item(
    organ_masks: OrganMasks | None, excluded: set[str], size: tuple[int, int], batch: int
) -> list[dict[str, torch.Tensor]]:
    if organ_masks is None:
        return [{} for _ in range(batch)]
    if tuple(organ_masks.image_size) != tuple(size):
        raise MetricInputError(
            f"organ_masks: masks are {organ_masks.image_size} (H, W) but the images are {size}; "
            "expected ORGAN_MASKS built for these images"
        )
    if organ_masks.batch_size not in (1, batch):
        raise MetricInputError(
            f"organ_masks: batch {organ_masks.batch_size} for {batch} images; expected 1 or {batch}"
        )
    unknown = sorted(excluded - set(organ_masks.names))
    if unknown:
        raise MetricInputError(
            f"target_organs: {unknown} not in organ_masks; expected names among {list(organ_masks.names)}"
        )
    keep = [k for k, n in enumerate(organ_masks.names) if n not in excluded]
    items = []
    for i in range(batch):
        b = 0 if organ_masks.batch_size == 1 else i
        items.append({organ_masks.names[k]: organ_masks.masks[b, k] for k in keep})
    return items


class CXRMetrics(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CXRMetrics",
            display_name="CXR Metrics (SSIM, PSNR, localisation, CLIP-I)",
            category=f"{CATEGORY}/metrics",
            description="Compare a counterfactual with its original: SSIM (global, outside and inside the "
            "target region, per organ), PSNR and MAE, edit localisation, CLIP-I and optional classifier "
            "validity. Shows the figures and a difference heat map, and appends one CSV row per image.",
            is_output_node=True,
            inputs=[
                io.Image.Input(
                    "original", tooltip="The original radiograph x0 (one image, or one per counterfactual)."
                ),
                io.Image.Input(
                    "counterfactual",
                    tooltip="The counterfactual x~ at the original's size; batches are scored image by image.",
                ),
                io.Mask.Input(
                    "target_region",
                    tooltip="Where the edit should land: MASK (H, W) or (B, H, W) at image resolution, soft values "
                    "in [0, 1]. Outside it is the anatomy that must be preserved.",
                ),
                io.String.Input(
                    "run_tag",
                    default="",
                    tooltip="Free text stored with every row and record (method, seed, ablation).",
                ),
                io.String.Input(
                    "csv_name",
                    default="cxr_metrics/metrics.csv",
                    tooltip="CSV file, relative to ComfyUI's output folder, that gets one row per image "
                    "('..' and absolute paths are refused). Empty: write no CSV.",
                ),
                OrganMasksIO.Input(
                    "organ_masks", optional=True, tooltip="Organ masks of these images for per-organ SSIM."
                ),
                io.String.Input(
                    "target_organs",
                    default="",
                    optional=True,
                    tooltip="Comma-separated organs that are the edit's target (e.g. 'left_lung'); they are "
                    "left out of the per-organ preservation figures.",
                ),
                io.ClipVision.Input(
                    "clip_vision",
                    optional=True,
                    tooltip="CLIP vision model (e.g. ViT-B/32, ViT-L/14) for CLIP-I.",
                ),
                ValidityClassifierIO.Input(
                    "validity_classifier",
                    optional=True,
                    tooltip="From 'CXR Validity Classifier Loader' (torchxrayvision); without it validity is "
                    "reported as unavailable.",
                ),
                io.String.Input(
                    "validity_label",
                    default="",
                    optional=True,
                    tooltip="The classifier label of the target finding, e.g. 'Effusion', 'Cardiomegaly'.",
                ),
            ],
            outputs=[
                io.String.Output(display_name="report_json", tooltip="JSON list, one record per image."),
                io.Image.Output(
                    display_name="heatmap", tooltip="|x~ - x0| heat map with region and organ contours."
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        original: torch.Tensor,
        counterfactual: torch.Tensor,
        target_region: torch.Tensor,
        run_tag: str = "",
        csv_name: str = "cxr_metrics/metrics.csv",
        organ_masks: OrganMasks | None = None,
        target_organs: str = "",
        clip_vision: object | None = None,
        validity_classifier: ValidityClassifier | None = None,
        validity_label: str = "",
    ) -> io.NodeOutput:
        csv_path = None
        if csv_name.strip():
            csv_path = safe_output_path(folder_paths.get_output_directory(), csv_name, "csv_name", ".csv")
        x0, x1 = pair_images(original, counterfactual)
        n, h, w = x1.shape[0], x1.shape[1], x1.shape[2]
        region = check_mask(target_region, "target_region", (h, w), n).to(x1.device)
        excluded = {normalise_organ_name(t) for t in target_organs.split(",") if t.strip()}
        organs = _organs_for_item(organ_masks, excluded, (h, w), n)
        g0, g1 = to_grey(x0), to_grey(x1)
        channels = (int(original.shape[-1]), int(counterfactual.shape[-1]))

        records, figures, lines = [], [], []
        for i in range(n):
            scores = pair_scores(g0[i], g1[i], region[i], organs[i])
            clip_value, clip_reason = None, "no CLIP_VISION connected"
            if clip_vision is not None:
                clip_value, clip_reason = float(clip_i(clip_vision, x0[i : i + 1], x1[i : i + 1])[0]), None
            rec = build_record(
                scores,
                run_tag=run_tag,
                image_index=i,
                batch_size=n,
                size=(h, w),
                channels=channels,
                excluded_organs=sorted(excluded),
                clip_i=clip_value,
                clip_reason=clip_reason,
                validity=validity_record(validity_classifier, validity_label, g0[i], g1[i]),
            )
            records.append(rec)
            lines.extend(summary_lines(rec))
            figures.append(difference_figure(g0[i], g1[i], region[i], organs[i]))
        heatmaps = torch.stack(figures).cpu()  # (N, H, W, 3)

        notes = []
        if csv_path is not None:
            append_records(csv_path, records)
            notes.append(f"CSV: +{n} row(s) -> {csv_path.relative_to(folder_paths.get_output_directory())}")
        lines.extend(notes)
        # the editor shows cxr_table as a read-only table (js/cxr_panels.js) and the heat map as the preview
        payload = {"cxr_metrics": records, "cxr_table": [metrics_table(records, notes)], "text": lines,
                   **ui.PreviewImage(heatmaps).as_dict()}  # fmt: skip
        return io.NodeOutput(json.dumps(records, indent=2), heatmaps, ui=payload)


class CXRValidityClassifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CXRValidityClassifierLoader",
            display_name="CXR Validity Classifier Loader (torchxrayvision)",
            category=f"{CATEGORY}/metrics",
            description="Load torchxrayvision's DenseNet from a state-dict file in models/cxr_classifiers for "
            "counterfactual validity. Never downloads; if torchxrayvision or the file is missing, the "
            "output says why and CXRMetrics reports validity as unavailable.",
            inputs=[
                io.Combo.Input(
                    "weights",
                    options=weight_files(CLASSIFIERS),
                    tooltip="A densenet121-res224-all state dict (.safetensors or weights-only .pt) in "
                    "models/cxr_classifiers; see the README for converting torchxrayvision's file.",
                ),
            ],
            outputs=[
                ValidityClassifierIO.Output(
                    display_name="validity_classifier",
                    tooltip="The classifier for CXRMetrics' validity, or why it is unavailable.",
                )
            ],
        )

    @classmethod
    def execute(cls, weights: str) -> io.NodeOutput:
        classifier = load_xrv_classifier(weight_path(CLASSIFIERS, weights, "weights"))
        if not classifier.available:
            log.warning("validity classifier unavailable: %s", classifier.reason)
        return io.NodeOutput(classifier)


NODES: list[type[io.ComfyNode]] = [CXRMetrics, CXRValidityClassifierLoader]
