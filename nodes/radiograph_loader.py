"""CXRImageLoader: a chest radiograph (DICOM, PNG, JPEG) from the input folder, at a working size.

Reading is in cxr_core/radiograph_io.py, the resize/pad record in cxr_core/geometry.py.
"""

from __future__ import annotations

import logging

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..cxr_core.geometry import RESIZE_MODES, GeometryError, ImageGeometry
from ..cxr_core.image_limits import PixelLimitError
from ..cxr_core.input_paths import list_input_files, path_fingerprint, resolve_input_path
from ..cxr_core.radiograph_io import (
    INTENSITY_MODES,
    RADIOGRAPH_EXTENSIONS,
    RadiographError,
    has_dicom_preamble,
    load_radiograph,
)
from .sockets import CATEGORY, GeometryIO

log = logging.getLogger("cxr_counterfactual.nodes.radiograph_loader")


class CXRImageLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = list_input_files(
            folder_paths.get_input_directory(), RADIOGRAPH_EXTENSIONS, sniff=has_dicom_preamble
        )
        return io.Schema(
            node_id="CXRImageLoader",
            display_name="CXR Image Loader (DICOM/PNG/JPEG)",
            category=f"{CATEGORY}/inputs",
            description="Load a chest radiograph from ComfyUI's input folder: DICOM (Modality LUT, VOI LUT or "
            "window, MONOCHROME1 inverted, 8-16 bit), 8/16-bit PNG or JPEG. Outputs grey in 3 channels at a "
            "working size (aspect kept, zero-padded) and the geometry record that OrganMaskLoader applies to "
            "masks so they stay pixel-aligned. Warns when the DICOM view is not PA or AP.",
            inputs=[
                io.Combo.Input(
                    "image",
                    options=files,
                    tooltip="Radiograph file in ComfyUI's input folder (.dcm/.dicom, .png, .jpg). DICOM files "
                    "without an extension are recognised by their header. Upload with the node's 'upload "
                    "radiograph' button or drop the file on the node.",
                ),
                io.Int.Input(
                    "working_size",
                    default=512,
                    min=64,
                    max=2048,
                    step=64,
                    tooltip="Long side of the working image in pixels, a multiple of 64 (64-2048). 512 suits "
                    "SD1.5. Ignored by resize_mode 'native_pad64'.",
                ),
                io.Combo.Input(
                    "resize_mode",
                    options=list(RESIZE_MODES),
                    default="letterbox",
                    tooltip="letterbox: keep aspect, long side = working_size, pad to a square. fit_pad64: keep "
                    "aspect, pad the short side only to a multiple of 64. native_pad64: original resolution, "
                    "padded to multiples of 64.",
                ),
                io.Combo.Input(
                    "intensity",
                    options=list(INTENSITY_MODES),
                    default="auto",
                    tooltip="auto: DICOM VOI LUT / window from the file (min-max if none); PNG/JPEG by bit depth. "
                    "minmax: stretch min..max. percentile: stretch the 0.5th..99.5th percentiles (robust to "
                    "collimator edges and labels).",
                ),
                io.Boolean.Input(
                    "invert",
                    default=False,
                    tooltip="Invert grey values after loading (only for files whose air is white without saying "
                    "so; MONOCHROME1 DICOMs are already inverted).",
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="IMAGE", tooltip="(1, H, W, 3) grey in [0, 1]; air dark, bone bright."
                ),
                GeometryIO.Output(
                    display_name="geometry",
                    tooltip="The resize + padding applied; connect it to OrganMaskLoader.",
                ),
                io.Mask.Output(
                    display_name="content", tooltip="(1, H, W): 1 on radiograph pixels, 0 on padding."
                ),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, image: str, **kwargs) -> str:
        path = resolve_input_path(image, folder_paths.get_input_directory(), what="CXRImageLoader image")
        return path_fingerprint(path)

    @classmethod
    def execute(
        cls, image: str, working_size: int = 512, resize_mode: str = "letterbox", intensity: str = "auto",
        invert: bool = False,
    ) -> io.NodeOutput:  # fmt: skip
        path = resolve_input_path(image, folder_paths.get_input_directory(), what="CXRImageLoader image")
        try:
            radiograph = load_radiograph(path, intensity)
            geometry = ImageGeometry.fit(radiograph.size, int(working_size), resize_mode)
        except (
            RadiographError,
            GeometryError,
            PixelLimitError,
        ) as exc:  # name the node: messages name the input
            raise type(exc)(f"CXRImageLoader: {exc}") from exc
        pixels = torch.from_numpy(radiograph.pixels)  # (H0, W0)
        if invert:
            pixels = 1.0 - pixels
        work = geometry.apply(pixels, what="radiograph").clamp(0.0, 1.0)  # (H, W)
        out = work[None, :, :, None].expand(1, *work.shape, 3).contiguous()  # (1, H, W, 3)
        log.info("%s: %s; %s", image, radiograph.meta, geometry.describe())
        # the node's preview: a PNG of the working image (the editor cannot draw DICOM itself)
        return io.NodeOutput(out, geometry, geometry.content_mask()[None], ui=ui.PreviewImage(out))


NODES: list[type[io.ComfyNode]] = [CXRImageLoader]
