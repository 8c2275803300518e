"""The pack's model folders go through ComfyUI's folder_paths, so extra_model_paths.yaml entries count."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from cxr_pack.cxr_core.segmentation_models import SEG_MODELS
from cxr_pack.nodes.organ_mask_loader import OrganMaskLoader


@pytest.fixture
def extra_model_paths(tmp_path: Path):
    """A real extra_model_paths.yaml loaded by ComfyUI's own loader; folder_paths restored afterwards."""
    import importlib.util

    import folder_paths

    # ComfyUI's own loader, by file: the bare name ``utils`` can be taken by another module in a long session
    spec = importlib.util.spec_from_file_location(
        "comfyui_extra_config", Path(folder_paths.base_path) / "utils" / "extra_config.py"
    )
    extra_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extra_config)
    load_extra_path_config = extra_config.load_extra_path_config

    saved = copy.deepcopy(folder_paths.folder_names_and_paths)
    folder = tmp_path / "shared_models" / "segmentation"
    folder.mkdir(parents=True)
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"cxr_test:\n  cxr_segmentation: {folder}\n", encoding="utf-8")
    load_extra_path_config(str(config))
    try:
        yield folder
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)


def _segment() -> str:
    with pytest.raises(Exception) as err:  # noqa: B017 - which error depends on torchxrayvision being installed
        OrganMaskLoader.execute(source="torchxrayvision", path="", seg_model="cxas_unet_resnet50",
                                image=torch.rand(1, 64, 64, 3))  # fmt: skip
    return str(err.value)


def test_segmentation_weights_are_looked_up_in_extra_model_paths(extra_model_paths: Path) -> None:
    missing = _segment()
    assert "is not on this machine" in missing and ".../shared_models/segmentation" in missing, missing
    (extra_model_paths / SEG_MODELS["cxas_unet_resnet50"].default_weights).write_bytes(b"weights")
    found = _segment()
    assert "is not on this machine" not in found, found
