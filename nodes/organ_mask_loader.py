"""OrganMaskLoader: organ masks from a label map, a mask folder, an NPZ, CheXmask or torchxrayvision.

Reading is in cxr_core/mask_sources.py, chexmask.py and segmentation_models.py;
alignment and validation in cxr_core/organ_mask_loading.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import folder_paths
import torch
from comfy_api.latest import io

from ..cxr_core.geometry import ImageGeometry
from ..cxr_core.label_schemes import BUILTIN_SCHEMES
from ..cxr_core.mask_overlay import organ_preview
from ..cxr_core.organ_mask_loading import (
    LEGENDS,
    MASK_MODES,
    SOURCES,
    MaskRequest,
    finish_masks,
    parse_organ_selection,
    read_source,
    source_fingerprint,
)
from ..cxr_core.organ_masks import OrganMasks
from ..cxr_core.segmentation_models import SEG_MODELS
from .model_files import SEGMENTATION, model_folders
from .sockets import CATEGORY, GeometryIO, OrganMasksIO
from .validation import require_finite

log = logging.getLogger("cxr_counterfactual.nodes.organ_mask_loader")

WEIGHTS_FOLDER = SEGMENTATION  # under ComfyUI's models folder, and its extra_model_paths.yaml entries


def weight_dirs() -> list[Path]:
    return model_folders(SEGMENTATION)


class OrganMaskLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OrganMaskLoader",
            display_name="Organ Mask Loader",
            category=f"{CATEGORY}/inputs",
            description="Load organ masks for a radiograph and align them with it through CXRImageLoader's "
            "geometry: a label-map image with a legend (CheXmask, ChestX-Det, CXAS or your JSON), a folder of "
            "per-organ images, an NPZ, a CheXmask CSV row, or a torchxrayvision segmentation model whose weight "
            "file is already on disk (nothing is downloaded). Files must be inside ComfyUI's input folder.",
            inputs=[
                io.Combo.Input(
                    "source",
                    options=list(SOURCES),
                    default="label_map",
                    tooltip="label_map: PNG of label values + legend. mask_folder: one image per organ, named "
                    "by organ ('left lung.png', 'lung_left.png', 'RL_mask.png'). npz: arrays by organ name. "
                    "chexmask_csv: CheXmask RLE row looked up by image_id. torchxrayvision: run a segmentation "
                    "model on the connected image.",
                ),
                io.String.Input(
                    "path",
                    default="",
                    tooltip="File or folder relative to ComfyUI's input folder (no '..', no absolute paths). For "
                    "torchxrayvision: the weight file name (empty = the model's default file name), looked up "
                    f"in models/{WEIGHTS_FOLDER}/ and ~/.torchxrayvision/models_data/.",
                ),
                io.Combo.Input(
                    "legend",
                    options=list(LEGENDS),
                    default="auto",
                    tooltip="label_map only. auto: '<label map>.json' next to the file. chexmask: 1 left lung, "
                    "2 right lung, 3 heart. chestx-det: its 14 classes, value = index + 1. cxas: its 159 "
                    "classes, value = index + 1. json: the file in legend_json.",
                ),
                io.String.Input(
                    "legend_json",
                    default="",
                    tooltip='label_map only: JSON legend in the input folder, e.g. {"1": "right lung", '
                    '"2": "left lung", "3": "heart"} or colours {"heart": [255, 0, 0]}.',
                ),
                io.String.Input(
                    "image_id",
                    default="",
                    tooltip="chexmask_csv only: the image's id in the CSV (MIMIC dicom_id, CheXpert Path, ...); "
                    "a file name or stem also matches.",
                ),
                io.Float.Input(
                    "min_quality",
                    default=0.7,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="chexmask_csv only: refuse rows whose Dice RCA (Mean) quality is below this "
                    "(0-1; the paper keeps >= 0.7).",
                ),
                io.Combo.Input(
                    "seg_model",
                    options=list(SEG_MODELS),
                    default="chestx_det_pspnet",
                    tooltip="torchxrayvision only: ChestX-Det PSPNet (14 classes, needs "
                    f"{SEG_MODELS['chestx_det_pspnet'].default_weights}) or CXAS UNet-ResNet50 (159 classes, "
                    f"needs {SEG_MODELS['cxas_unet_resnet50'].default_weights}).",
                ),
                io.String.Input(
                    "organs",
                    default="all",
                    tooltip="Organs to keep, comma-separated ('right_lung, left_lung, heart'; synonyms such as "
                    "'L lung' work; left/right are the patient's), or 'all'. Unknown or absent names are errors.",
                ),
                io.Combo.Input(
                    "mask_mode",
                    options=list(MASK_MODES),
                    default="binary",
                    tooltip="binary: threshold after resizing (clean edges; JPEG ringing removed). soft: keep "
                    "anti-aliased / probability values in [0, 1].",
                ),
                io.Float.Input(
                    "threshold",
                    default=0.5,
                    min=0.01,
                    max=0.99,
                    step=0.01,
                    tooltip="binary mode: a pixel belongs to the organ when its value is >= this (0.01-0.99).",
                ),
                GeometryIO.Input(
                    "geometry",
                    optional=True,
                    tooltip="From CXRImageLoader: masks get the image's exact resize and padding. Without it, "
                    "masks must already have the image's size.",
                ),
                io.Image.Input(
                    "image",
                    optional=True,
                    tooltip="The working radiograph: checked against the masks' size, drawn under the preview, "
                    "and segmented by the torchxrayvision source.",
                ),
            ],
            outputs=[
                OrganMasksIO.Output(
                    display_name="ORGAN_MASKS",
                    tooltip="Named organ masks (B, K, H, W), pixel-aligned with the working image.",
                ),
                io.Mask.Output(display_name="union", tooltip="(B, H, W) union of the selected organs."),
                io.Image.Output(
                    display_name="preview",
                    tooltip="Organs in colour over the image, with a legend of the organs found.",
                ),
                io.String.Output(display_name="info", tooltip="Organs, areas, scheme and quality score."),
            ],
        )

    @classmethod
    def fingerprint_inputs(
        cls, source: str = "label_map", path: str = "", legend: str = "auto", legend_json: str = "", **kwargs
    ) -> str:
        if source == "torchxrayvision":
            return f"{source}:{path}:{kwargs.get('seg_model')}"
        return source_fingerprint(source, path, legend, legend_json, folder_paths.get_input_directory())

    @classmethod
    def execute(
        cls, source: str, path: str = "", legend: str = "auto", legend_json: str = "", image_id: str = "",
        min_quality: float = 0.7, seg_model: str = "chestx_det_pspnet", organs: str = "all",
        mask_mode: str = "binary", threshold: float = 0.5, geometry: ImageGeometry | None = None,
        image: torch.Tensor | None = None,
    ) -> io.NodeOutput:  # fmt: skip
        require_finite(cls, locals())
        req = MaskRequest(source, path, legend, legend_json, image_id, min_quality, seg_model)
        image_size = tuple(image.shape[1:3]) if image is not None else None
        grey = None
        if source == "torchxrayvision" and image is not None:
            work = image[0, :, :, :3].float().mean(dim=-1)  # (H, W)
            grey = geometry.invert(work, what="image") if geometry is not None else work
        raw = read_source(req, folder_paths.get_input_directory(), grey01=grey, weight_dirs=weight_dirs(),
                          device=_device() if source == "torchxrayvision" else "cpu")  # fmt: skip
        om = finish_masks(raw, parse_organ_selection(organs), geometry, image_size, mask_mode, threshold)
        preview = organ_preview(image, om.names, om.masks)
        return io.NodeOutput(om, om.union(), preview, _info(om, raw.absent))


def _device() -> torch.device:
    import comfy.model_management

    return comfy.model_management.get_torch_device()


def _info(om: OrganMasks, absent: tuple[str, ...]) -> str:
    lines = [om.describe()]
    q = om.meta.get("dice_rca_mean")
    if q is not None:
        lines.append(f"CheXmask quality: Dice RCA (Mean) {q:.3f}, (Max) {om.meta.get('dice_rca_max')}")
    if absent:
        lines.append(
            f"in the legend but absent here: {', '.join(absent[:20])}" + (" ..." if len(absent) > 20 else "")
        )
    lines.append(f"geometry: {om.meta.get('geometry')}")
    if om.scheme in BUILTIN_SCHEMES:
        lines.append(f"scheme: {om.scheme}")
    return "\n".join(lines)


NODES: list[type[io.ComfyNode]] = [OrganMaskLoader]
