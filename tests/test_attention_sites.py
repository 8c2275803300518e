"""Mask-to-site mapping and site selection."""

from __future__ import annotations

import pytest
import torch
from attention_probe import add_probe
from cxr_pack.cxr_core.attention.site_masks import mask_to_site, match_batch
from cxr_pack.cxr_core.attention.sites import SD15_SITES, parse_site_spec, site_grid
from helpers import random_cond, sample


def test_area_average_is_exact_on_divisible_grids() -> None:
    m = torch.zeros(64, 96)
    m[:32, :48] = 1.0  # top-left quarter
    r = mask_to_site(m, (4, 6)).reshape(4, 6)
    assert torch.equal(r[:2, :3], torch.ones(2, 3)) and float(r.sum()) == 6.0
    half = mask_to_site(m, (1, 1))
    assert torch.allclose(half, torch.tensor([[0.25]]))


def test_non_square_odd_and_batched_masks() -> None:
    m = torch.rand(2, 3, 104, 72)  # (B, K, H, W), latent 13x9 -> odd grids
    r = mask_to_site(m, site_grid((13, 9), ("input", 4)))
    assert r.shape == (2, 3, 7 * 5)
    assert float(r.min()) >= 0 and float(r.max()) <= 1
    # area average preserves the mean for any grid
    assert torch.allclose(mask_to_site(m, (1, 1))[..., 0], m.mean((-2, -1)), atol=1e-6)


def test_match_batch_broadcasts_or_refuses() -> None:
    t = torch.zeros(1, 5)
    assert match_batch(t, 3, "x").shape == (3, 5)
    with pytest.raises(ValueError, match="2 mask sets for a batch of 3"):
        match_batch(torch.zeros(2, 5), 3, "x")


def test_site_grid_matches_the_model_for_odd_latents(tiny_model) -> None:
    m = tiny_model.clone()
    probe = add_probe(m, "attn1", SD15_SITES)
    sample(m, random_cond(1), random_cond(2), steps=1, latent_hw=(13, 21))
    seen = {r["site"]: r["hw"] for r in probe.records}
    assert set(seen) == set(SD15_SITES)
    for site, hw in seen.items():
        assert hw == site_grid((13, 21), site), site


@pytest.mark.parametrize(
    ("spec", "n"),
    [("all", 16), ("64,32", 10), ("16", 5), ("8", 1), ("64x64", 5), ("input", 6), ("input4, output9", 2)],
)
def test_parse_site_spec(spec: str, n: int) -> None:
    assert len(parse_site_spec(spec)) == n


def test_parse_site_spec_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="cannot read 'input3'"):
        parse_site_spec("input3")
