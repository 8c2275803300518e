"""What a DICOM file must be before its pixels are decoded, and why one without pixels has none.

The loader uses single-frame greyscale (MONOCHROME1/2) or colour (RGB, YBR,
read as luminance) images. Anything else is refused by what it is: the number
of frames, the photometric interpretation, the samples per pixel or the pixel
count; and a file without pixel data is told apart as truncated or as a
non-image object (a report, a plan, a DICOMDIR).
"""

from __future__ import annotations

from pathlib import Path

from .image_limits import check_pixel_count

GREY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
_IMAGE_TAGS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation")


def layout_problem(ds, name: str) -> str | None:  # noqa: ANN001 (a pydicom Dataset)
    """Why the loader cannot use this DICOM's pixels (None if it can), read before decoding them.

    Above the pixel limit, :class:`PixelLimitError` is raised.
    """
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return (
            f"image '{name}': the DICOM holds {frames} frames (a multi-frame object: cine, tomosynthesis or a "
            "stack); a chest radiograph is one frame. Export the frame you want as a single-frame DICOM or PNG"
        )
    photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    if photometric and photometric not in GREY + COLOUR:
        return (
            f"image '{name}': photometric interpretation {photometric} is not supported; expected greyscale "
            f"({', '.join(GREY)}) or colour ({', '.join(COLOUR)}). Export the image as greyscale DICOM or PNG"
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples not in (1, 3):
        return (
            f"image '{name}': {samples} samples per pixel; expected 1 (greyscale) or 3 (colour). Export the "
            "image as greyscale DICOM or PNG"
        )
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows and cols:
        check_pixel_count(rows, cols, f"image '{name}'")
    return None


def describe_missing_pixels(ds, path: Path) -> str:  # noqa: ANN001 (a pydicom Dataset)
    """The error for a DICOM without pixel data: truncated, or not an image at all."""
    name = path.name
    size = path.stat().st_size if path.exists() else 0
    meta = getattr(ds, "file_meta", None)
    uid = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    kind = str(getattr(uid, "name", "") or "") if uid else ""
    if "Image" in kind or any(t in ds for t in _IMAGE_TAGS):
        return (
            f"image '{name}': the file ({kind or 'a DICOM image'}) ends after {size} bytes without its pixel "
            "data: it is truncated. Copy it again from the PACS or the dataset"
        )
    if kind and "Directory" not in kind:
        return f"image '{name}': the file is not an image but '{kind}'; choose the radiograph's DICOM file"
    if "Directory" in kind or "DirectoryRecordSequence" in ds:
        return (
            f"image '{name}': the file is a DICOMDIR (an index of other files); choose one image file from it"
        )
    return (
        f"image '{name}': the DICOM file ({size} bytes) has no pixel data and no SOP class: it is truncated or "
        "not an image. Choose the radiograph's DICOM file, or copy it again"
    )
