"""The geometry record: resize + pad to the working size, applied identically to masks, and inverted."""

from __future__ import annotations

import pytest
import torch
from cxr_pack.cxr_core.geometry import GeometryError, ImageGeometry


@pytest.mark.parametrize(
    ("size", "mode", "expect_working", "expect_resized"),
    [
        ((1955, 1841), "letterbox", (512, 512), (512, 482)),
        ((1955, 1841), "fit_pad64", (512, 512), (512, 482)),
        ((1000, 2000), "letterbox", (512, 512), (256, 512)),
        ((1000, 2000), "fit_pad64", (256, 512), (256, 512)),
        ((1000, 1500), "fit_pad64", (384, 512), (341, 512)),
        ((300, 200), "native_pad64", (320, 256), (300, 200)),
        ((128, 128), "letterbox", (512, 512), (512, 512)),
    ],
)
def test_fit_keeps_aspect_and_pads_to_multiples_of_64(size, mode, expect_working, expect_resized) -> None:
    g = ImageGeometry.fit(size, 512, mode)
    assert g.working_size == expect_working
    assert g.resized_size == expect_resized
    assert g.working_size[0] % 64 == 0 and g.working_size[1] % 64 == 0
    top, bottom, left, right = g.pad
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1  # centred
    oh, ow = size
    assert abs(g.resized_size[0] / g.resized_size[1] - oh / ow) < 0.01


def test_apply_puts_content_inside_the_padding_and_invert_restores_it() -> None:
    g = ImageGeometry.fit((400, 200), 256, "letterbox")  # resized 256x128, pad left/right 64
    x = torch.zeros(400, 200)
    x[100:300, 50:150] = 1.0  # a block in the middle
    y = g.apply(x)
    assert y.shape == (256, 256)
    assert float(y[:, :64].abs().sum()) == 0.0 and float(y[:, -64:].abs().sum()) == 0.0
    ys, xs = torch.nonzero(y > 0.5, as_tuple=True)
    assert 64 + 30 <= int(xs.min()) and int(xs.max()) <= 64 + 98
    back = g.invert(y)
    assert back.shape == (400, 200)
    assert float(((back > 0.5).float() - x).abs().mean()) < 0.01
    assert torch.equal(g.content_mask()[:, 64:192], torch.ones(256, 128))


def test_masks_and_image_get_the_identical_transform() -> None:
    g = ImageGeometry.fit((300, 240), 128, "letterbox")
    img = torch.rand(300, 240)
    masks = img.expand(2, 3, -1, -1)  # (B, K, H, W): every channel equals the image
    out = g.apply(masks)
    assert out.shape == (2, 3, 128, 128)
    assert torch.allclose(out[1, 2], g.apply(img))


def test_conform_rescales_same_aspect_and_refuses_another_aspect() -> None:
    g = ImageGeometry.fit((400, 300), 128, "letterbox")
    half = torch.ones(200, 150)  # same aspect, half resolution: accepted
    assert g.apply(half).shape == g.working_size
    with pytest.raises(GeometryError, match=r"aspect .*same field of view"):
        g.apply(torch.ones(300, 300))


def test_bad_records_and_sizes_are_rejected() -> None:
    with pytest.raises(GeometryError, match="multiple of 64"):
        ImageGeometry.fit((100, 100), 500, "letterbox")
    with pytest.raises(GeometryError, match="resize_mode"):
        ImageGeometry.fit((100, 100), 512, "stretch")
    with pytest.raises(GeometryError, match="working size"):
        ImageGeometry((10, 10), 1.0, (10, 10), (0, 0, 0, 0), (12, 10))
    g = ImageGeometry.identity((64, 64))
    with pytest.raises(GeometryError, match="working size"):
        g.invert(torch.zeros(32, 32))


def test_record_is_frozen() -> None:
    g = ImageGeometry.identity((8, 8))
    with pytest.raises(AttributeError):
        g.scale = 2.0  # type: ignore[misc]
