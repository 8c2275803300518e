"""AnatomyAttentionGate on the tiny seeded UNet: mechanism figure, identity, batching."""

from __future__ import annotations

import math

import torch
from attention_probe import add_probe, quadrant_masks
from cxr_pack.cxr_core.attention.contributions import SelfAttentionGate
from cxr_pack.cxr_core.attention.engine import installed
from cxr_pack.cxr_core.attention.measures import attention_probs, per_query_cross_mass, predicted_gated_mass
from cxr_pack.cxr_core.attention.sites import parse_site_spec
from cxr_pack.cxr_core.organ_masks import OrganMasks
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from helpers import random_cond, sample

GAMMA = 4.0


def _organs(batch_masks: torch.Tensor | None = None) -> OrganMasks:
    m = quadrant_masks(128) if batch_masks is None else batch_masks
    return OrganMasks(names=("left_lung", "heart"), masks=m, image_size=(128, 128))


def _gate(model, organs: OrganMasks | None = None, **kw):
    args = dict(
        organs="all", strength=GAMMA, hard=False, tau=0.5, sites="64,32", start_percent=0.0, end_percent=1.0,
        background="free", enabled=True,
    )  # fmt: skip
    args.update(kw)
    return AnatomyAttentionGate.execute(model, organs or _organs(), **args).result[0]


def _gate_stats(probe, gate: SelfAttentionGate) -> list[dict]:
    """Cross-organ mass per call, unregulated (same q, k, no bias) and gated (actual bias)."""
    stats = []
    for rec in probe.records:
        r = gate.memberships(rec["hw"], torch.device("cpu"))
        a = gate.affinity(r)
        gated = r.sum(1) > gate.tau  # (1, N)
        p0 = attention_probs(rec["q"], rec["k"], rec["heads"])
        p1 = attention_probs(rec["q"], rec["k"], rec["heads"], rec["bias"])
        m0 = per_query_cross_mass(p0, a)[:, :, gated[0]]  # (B, H, Ng)
        m1 = per_query_cross_mass(p1, a)[:, :, gated[0]]
        out = torch.nn.functional.scaled_dot_product_attention(
            *(t.reshape(t.shape[0], t.shape[1], rec["heads"], -1).transpose(1, 2) for t in (rec["q"], rec["k"], rec["v"])),
            attn_mask=rec["bias"],
        )  # fmt: skip
        ref = p1 @ rec["v"].reshape(rec["v"].shape[0], rec["v"].shape[1], rec["heads"], -1).transpose(1, 2)
        stats.append(
            {
                "m0": m0,
                "m1": m1,
                "pred": predicted_gated_mass(m0, gate.gamma),
                "sdpa_err": float((out - ref).abs().max()),
            }
        )
    return stats


def test_soft_gate_cuts_cross_organ_mass_by_the_predicted_factor(tiny_model) -> None:
    model = _gate(tiny_model)
    gate = next(iter(installed(model, "attn1").values())).contributions[0]
    probe = add_probe(model, "attn1", parse_site_spec("64,32"))
    sample(model, random_cond(1), random_cond(2), steps=2, latent_hw=(16, 16))
    stats = _gate_stats(probe, gate)
    assert len(stats) == 2 * 10  # 2 steps x 10 gated sites, cond and uncond batched together
    m0 = torch.cat([s["m0"].flatten() for s in stats])
    m1 = torch.cat([s["m1"].flatten() for s in stats])
    pred = torch.cat([s["pred"].flatten() for s in stats])
    assert max(s["sdpa_err"] for s in stats) < 1e-4, (
        "recomputed probabilities must reproduce the attention output"
    )
    assert float(m0.mean()) > 0.2, "unregulated cross-organ mass should be large on random weights"
    # binary memberships: each query's mass follows m e^-g / (1 - m + m e^-g) exactly
    assert torch.allclose(m1, pred, rtol=1e-3, atol=1e-6)
    ratio = float(m1.mean() / m0.mean())
    bound = math.exp(-GAMMA) / (1.0 - float(m0.max()))
    print(
        f"cross-organ mass: unregulated {float(m0.mean()):.4f}, gated {float(m1.mean()):.5f}, ratio {ratio:.4f}"
    )
    assert ratio <= bound, f"fall factor {ratio:.4f} weaker than predicted {bound:.4f}"


def test_hard_gate_leaves_almost_no_cross_organ_mass(tiny_model) -> None:
    model = _gate(tiny_model, hard=True)
    gate = next(iter(installed(model, "attn1").values())).contributions[0]
    probe = add_probe(model, "attn1", parse_site_spec("64,32"))
    out = sample(model, random_cond(1), random_cond(2), steps=2, latent_hw=(16, 16))
    assert torch.isfinite(out).all()
    m1 = torch.cat([s["m1"].flatten() for s in _gate_stats(probe, gate)])
    assert float(m1.max()) < 1e-3


def test_isolated_background_confines_background_queries(tiny_model) -> None:
    model = _gate(tiny_model, hard=True, background="isolated")
    gate = next(iter(installed(model, "attn1").values())).contributions[0]
    probe = add_probe(model, "attn1", parse_site_spec("64"))
    sample(model, random_cond(1), random_cond(2), steps=1, latent_hw=(16, 16))
    rec = probe.records[0]
    r = gate.memberships(rec["hw"], torch.device("cpu"))
    s = r.sum(1)[0]
    p1 = attention_probs(rec["q"], rec["k"], rec["heads"], rec["bias"])
    bg_to_organ = p1[:, :, s <= 0.5][..., s > 0.5].sum(-1)
    assert float(bg_to_organ.max()) < 1e-6


def test_disabled_gate_is_bit_identical_to_plain_sampling(tiny_model) -> None:
    pos, neg = random_cond(1), random_cond(2)
    plain = sample(tiny_model, pos, neg, seed=5, steps=3)
    off = _gate(tiny_model, enabled=False)
    assert off is tiny_model
    assert torch.equal(sample(off, pos, neg, seed=5, steps=3), plain)
    # installed, window = the last step only: the replace path changes no prediction before it
    late = _gate(tiny_model, start_percent=1.0, end_percent=1.0)
    assert installed(late, "attn1")
    plain_states: list[torch.Tensor] = []
    late_states: list[torch.Tensor] = []
    sample(
        tiny_model, pos, neg, seed=5, steps=3, callback=lambda i, x0, x, n: plain_states.append(x0.clone())
    )
    sample(late, pos, neg, seed=5, steps=3, callback=lambda i, x0, x, n: late_states.append(x0.clone()))
    assert len(plain_states) == len(late_states) == 3
    assert torch.equal(late_states[0], plain_states[0]) and torch.equal(late_states[1], plain_states[1])
    assert not torch.equal(late_states[2], plain_states[2])
    on = _gate(tiny_model)
    assert not torch.equal(sample(on, pos, neg, seed=5, steps=3), plain)


def test_gate_does_not_touch_the_input_model(tiny_model) -> None:
    before = dict(tiny_model.model_options["transformer_options"])
    _gate(tiny_model)
    assert tiny_model.model_options["transformer_options"] == before


def test_batch_of_two_with_different_masks_and_cfg_one(tiny_model) -> None:
    a = quadrant_masks(128)
    b = a.flip(-1)  # mirrored organs for the second item
    pos, neg = random_cond(1, batch=1), random_cond(2, batch=1)
    per_item = _gate(tiny_model, _organs(torch.stack([a, b])))
    same = _gate(tiny_model, _organs(torch.stack([a, a])))
    broadcast = _gate(tiny_model, _organs(a))
    for cfg in (5.0, 1.0):
        x_per = sample(per_item, pos, neg, seed=9, steps=2, batch=2, cfg=cfg)
        x_same = sample(same, pos, neg, seed=9, steps=2, batch=2, cfg=cfg)
        x_bc = sample(broadcast, pos, neg, seed=9, steps=2, batch=2, cfg=cfg)
        assert torch.allclose(x_per[0], x_same[0], atol=1e-5), "item 0 has the same masks in both runs"
        assert not torch.allclose(x_per[1], x_same[1], atol=1e-3), "item 1's own masks must matter"
        assert torch.allclose(x_same, x_bc, atol=1e-5), "one mask set broadcasts to every item"


def test_three_mask_sets_for_two_items_is_a_clear_error(tiny_model) -> None:
    import pytest

    masks = torch.stack([quadrant_masks(128)] * 3)
    model = _gate(tiny_model, _organs(masks))
    with pytest.raises(ValueError, match="3 mask sets for a batch of 2"):
        sample(model, random_cond(1), random_cond(2), steps=1, batch=2)
