"""PSNR, MAE, region SSIM and localisation on bare tensors, and the documented edge cases."""

from __future__ import annotations

import json
import math

import pytest
import torch
from cxr_pack.cxr_core.metrics.image_scores import pair_scores
from cxr_pack.cxr_core.metrics.prep import MetricInputError, check_image, check_mask, pair_images, to_grey
from cxr_pack.cxr_core.metrics.report import build_record, summary_lines
from metric_helpers import as_image, demo_pairs
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity


def _record(scores, **kw):
    args = dict(
        run_tag="t",
        image_index=0,
        batch_size=1,
        size=(8, 8),
        channels=(3, 3),
        excluded_organs=[],
        clip_i=None,
        clip_reason="no CLIP_VISION connected",
        validity={"available": False, "reason": "none"},
    )
    args.update(kw)
    return build_record(scores, **args)


def test_lesion_scores_match_references_and_definitions() -> None:
    x0, x1, region = demo_pairs()["lesion"]
    s = pair_scores(x0, x1, region)
    a, b = x0.double().numpy(), x1.double().numpy()
    assert s.psnr_global_db == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1), rel=1e-9)
    assert s.mae_global == pytest.approx(float((x1.double() - x0.double()).abs().mean()), rel=1e-9)
    assert s.ssim_global == pytest.approx(
        structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1
        ),
        abs=1e-4,
    )
    outside = region == 0
    d = (x1.double() - x0.double()).abs()
    assert s.mae_outside == pytest.approx(float(d[outside].mean()), rel=1e-9)
    mse_out = mean_squared_error(a[outside.numpy()], b[outside.numpy()])
    assert s.psnr_outside_db == pytest.approx(10 * math.log10(1 / mse_out), rel=1e-9)
    # a local lesion: nearly all change inside the region, anatomy outside intact
    assert s.localisation == pytest.approx(float((d * region).sum() / d.sum()), rel=1e-9)
    assert s.localisation > 0.95
    assert s.ssim_outside > 0.999 > s.ssim_inside
    assert s.region_fraction == pytest.approx(float(region.mean()), rel=1e-6)


def test_identical_images_give_ssim_one_infinite_psnr_and_null_localisation() -> None:
    x0, _, region = demo_pairs()["lesion"]
    s = pair_scores(x0, x0.clone(), region)
    assert s.ssim_global == pytest.approx(1.0, abs=1e-12)
    assert s.ssim_outside == pytest.approx(1.0, abs=1e-12)
    assert s.ssim_inside == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(s.psnr_global_db) and math.isinf(s.psnr_outside_db)
    assert s.localisation is None
    assert s.null_reasons["localisation"] == "no change: the images are identical"
    rec = _record(s)
    text = json.dumps(rec, allow_nan=False)  # never Infinity/NaN in JSON
    back = json.loads(text)
    assert back["psnr_global_db"] is None and back["psnr_global_infinite"] is True
    assert back["psnr_outside_db"] is None and back["psnr_outside_infinite"] is True
    assert "infinite" in back["null_reasons"]["psnr_global_db"]
    assert back["localisation"] is None and back["null_reasons"]["localisation"].startswith("no change")
    assert any("inf dB" in line for line in summary_lines(rec))


def test_empty_region_gives_documented_nulls() -> None:
    x0, x1, region = demo_pairs()["lesion"]
    s = pair_scores(x0, x1, torch.zeros_like(region))
    assert s.ssim_inside is None and s.localisation is None and s.mae_inside is None
    assert s.null_reasons["ssim_inside"] == "target region is empty"
    assert s.null_reasons["localisation"] == "target region is empty"
    assert s.ssim_outside == pytest.approx(s.ssim_global, abs=1e-12)
    assert s.mae_outside == pytest.approx(s.mae_global, rel=1e-9)
    assert s.region_fraction == 0.0
    json.dumps(_record(s), allow_nan=False)


def test_full_region_gives_documented_nulls() -> None:
    x0, x1, region = demo_pairs()["lesion"]
    s = pair_scores(x0, x1, torch.ones_like(region))
    assert s.ssim_outside is None and s.psnr_outside_db is None and s.mae_outside is None
    assert s.null_reasons["ssim_outside"] == "target region covers the whole image"
    assert s.localisation == pytest.approx(1.0)
    assert s.ssim_inside == pytest.approx(s.ssim_global, abs=1e-12)


def test_region_only_in_the_ssim_border_is_explained() -> None:
    x0, x1, _ = demo_pairs()["noise"]
    region = torch.zeros_like(x0)
    region[:3, :3] = 1
    s = pair_scores(x0, x1, region)
    assert s.ssim_inside is None and "border" in s.null_reasons["ssim_inside"]
    assert s.localisation is not None  # localisation is over all pixels


def test_per_organ_ssim_is_the_masked_mean() -> None:
    x0, x1, region = demo_pairs()["noise"]
    lung = torch.zeros_like(x0)
    lung[40:200, 20:110] = 1
    s = pair_scores(x0, x1, region, {"right_lung": lung, "heart": torch.ones_like(x0)})
    assert s.ssim_organs["heart"] == pytest.approx(s.ssim_global, abs=1e-12)
    assert 0 < s.ssim_organs["right_lung"] < 1


def test_mismatched_sizes_are_refused() -> None:
    a, b = torch.rand(1, 64, 64, 3), torch.rand(1, 64, 48, 3)
    with pytest.raises(MetricInputError, match=r"sizes differ.*\(64, 64\).*\(64, 48\)"):
        pair_images(a, b)


def test_mismatched_batches_are_refused_but_one_original_broadcasts() -> None:
    with pytest.raises(MetricInputError, match="batch sizes 2 and 3"):
        pair_images(torch.rand(2, 32, 32, 3), torch.rand(3, 32, 32, 3))
    x0, x1 = pair_images(torch.rand(1, 32, 32, 3), torch.rand(3, 32, 32, 3))
    assert x0.shape == x1.shape == (3, 32, 32, 3)


def test_single_channel_against_rgb_compares_grey() -> None:
    x0, x1, region = demo_pairs()["lesion"]
    a, b = pair_images(as_image(x0, 1), as_image(x1, 3))
    assert a.shape[-1] == 1 and b.shape[-1] == 3
    grey = pair_scores(to_grey(a)[0], to_grey(b)[0], region)
    ref = pair_scores(x0, x1, region)
    assert grey.ssim_global == pytest.approx(ref.ssim_global, abs=1e-6)
    assert grey.localisation == pytest.approx(ref.localisation, abs=1e-6)


def test_rgb_is_reduced_with_rgb2gray_weights() -> None:
    from skimage.color import rgb2gray

    img = torch.rand(1, 16, 16, 3)
    assert torch.allclose(
        to_grey(img)[0].double(), torch.from_numpy(rgb2gray(img[0].double().numpy())), atol=1e-6
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_images_are_refused(bad: float) -> None:
    img = torch.rand(1, 32, 32, 3)
    img[0, 3, 4, 1] = bad
    with pytest.raises(MetricInputError, match=r"counterfactual: contains 1 NaN/Inf"):
        pair_images(torch.rand(1, 32, 32, 3), img)
    with pytest.raises(MetricInputError, match=r"original: contains 1 NaN/Inf"):
        pair_images(img, torch.rand(1, 32, 32, 3))


def test_out_of_range_images_and_masks_are_refused() -> None:
    with pytest.raises(MetricInputError, match=r"original: expected values in \[0, 1\].*255"):
        check_image(torch.full((1, 16, 16, 3), 255.0), "original")
    with pytest.raises(MetricInputError, match=r"target_region: mask is \(16, 8\)"):
        check_mask(torch.zeros(16, 8), "target_region", (16, 16), 1)
    with pytest.raises(MetricInputError, match="target_region: contains NaN"):
        check_mask(torch.full((16, 16), float("nan")), "target_region", (16, 16), 1)
    with pytest.raises(MetricInputError, match="batch of 2 masks for 3 images"):
        check_mask(torch.zeros(2, 16, 16), "target_region", (16, 16), 3)
    assert check_mask(torch.zeros(16, 16), "target_region", (16, 16), 3).shape == (3, 16, 16)
