"""SSIM equals scikit-image's reference settings on the real demo radiograph and on random images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cxr_pack.cxr_core.metrics.ssim import RADIUS, WIN, crop_to_map, ssim, ssim_map, weighted_mean
from metric_helpers import demo_pairs
from skimage.metrics import structural_similarity

TOL = 1e-4


def _skimage(a: torch.Tensor, b: torch.Tensor, full: bool = False):
    return structural_similarity(
        a.double().numpy(),
        b.double().numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1,
        full=full,
    )


@pytest.mark.parametrize("kind", ["noise", "blur", "lesion"])
def test_ssim_matches_skimage_on_demo_radiograph(kind: str) -> None:
    x0, x1, _ = demo_pairs()[kind]
    assert x0.shape == (256, 241)
    ref = _skimage(x0, x1)
    ours = float(ssim(x0, x1))
    assert abs(ours - ref) < TOL, (kind, ours, ref)
    assert ref < 0.999, "the edit must change the image, or the comparison proves nothing"


@pytest.mark.parametrize("shape", [(11, 11), (37, 53), (128, 96)])
@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_skimage_on_random_images(shape: tuple[int, int], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g)
    b = (a + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1)
    c = torch.rand(shape, generator=g)  # unrelated image: low SSIM
    assert abs(float(ssim(a, b)) - _skimage(a, b)) < TOL
    assert abs(float(ssim(a, c)) - _skimage(a, c)) < TOL


def test_ssim_map_matches_skimage_full_map_in_the_interior() -> None:
    x0, x1, region = demo_pairs()["lesion"]
    _, full = _skimage(x0, x1, full=True)
    ours = ssim_map(x0, x1).numpy()
    inner = full[RADIUS:-RADIUS, RADIUS:-RADIUS]
    assert ours.shape == inner.shape
    assert np.abs(ours - inner).max() < TOL
    # region means are plain masked means of that same map
    m = crop_to_map(region).numpy() > 0
    inside = float(weighted_mean(torch.from_numpy(ours), torch.from_numpy(m.astype(np.float64))))
    assert abs(inside - inner[m].mean()) < TOL
    assert abs(float(ssim_map(x0, x1)[~torch.from_numpy(m)].mean()) - inner[~m].mean()) < TOL


def test_ssim_of_identical_images_is_one() -> None:
    x0, _, _ = demo_pairs()["noise"]
    assert float(ssim(x0, x0.clone())) == pytest.approx(1.0, abs=1e-12)


def test_ssim_batched_equals_per_image() -> None:
    pairs = demo_pairs()
    a = torch.stack([p[0] for p in pairs.values()])
    b = torch.stack([p[1] for p in pairs.values()])
    batched = ssim(a, b)
    assert batched.shape == (3,)
    for k, (x0, x1, _) in enumerate(pairs.values()):
        assert float(batched[k]) == pytest.approx(float(ssim(x0, x1)), abs=1e-12)


def test_ssim_refuses_images_smaller_than_the_window() -> None:
    a = torch.rand(WIN - 1, 40)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a, a)
    with pytest.raises(ValueError, match="win_size exceeds image extent"):
        _skimage(a, a)  # scikit-image refuses them too
