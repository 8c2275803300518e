"""The gate as users meet it: the demo radiograph's own organ masks at 256 px, an SDEdit start.

Area-averaged organ edges give tokens with 0 < r_ik < 1, unlike the grid-aligned masks of
test_attention_gate.py. The soft gate keeps its exact spec there; the hard gate decides each token's
organs at tau, so cross-organ attention (by those decided memberships) is blocked on real masks too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from attention_probe import add_probe
from cxr_pack.cxr_core import demo_assets
from cxr_pack.cxr_core.attention.engine import installed
from cxr_pack.cxr_core.attention.measures import attention_probs, per_query_cross_mass
from cxr_pack.cxr_core.attention.sites import parse_site_spec
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from cxr_pack.nodes.organ_mask_loader import OrganMaskLoader
from cxr_pack.nodes.radiograph_loader import CXRImageLoader
from helpers import comfy_folders, random_cond, sample


@pytest.fixture(scope="module")
def demo_masks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "input"
    with comfy_folders(input=folder):
        shutil.copy(demo_assets.demo_radiograph_path(), folder)
        for f in (demo_assets.DEMO_LABEL_MAP, demo_assets.DEMO_LEGEND):
            shutil.copy(f, Path(folder) / f.name)
        image, geometry, _ = CXRImageLoader.execute("RG1_UNCR.dcm", working_size=256).result
        om = OrganMaskLoader.execute(
            "label_map", "RG1_UNCR_labels.png", geometry=geometry, image=image
        ).result[0]
    assert om.image_size == (256, 256)
    return om


def _cross_mass(model, om, hard: bool) -> tuple[float, float, float]:
    """(unregulated, gated, gated by the soft affinity) mean cross-organ mass at the 64x64 and 32x32 sites."""
    gated_model = AnatomyAttentionGate.execute(
        model, om, organs="all", strength=4.0, hard=hard, tau=0.5, sites="64,32", start_percent=0.0,
        end_percent=1.0, background="free", enabled=True,
    ).result[0]  # fmt: skip
    gate = next(iter(installed(gated_model, "attn1").values())).contributions[0]
    probe = add_probe(gated_model, "attn1", parse_site_spec("64,32"))
    latent = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    out = sample(gated_model, random_cond(1), random_cond(2), steps=4, denoise=0.6, latent_image=latent)
    assert torch.isfinite(out).all()
    m0, m1, m_soft = [], [], []
    for rec in probe.records:
        r = gate.memberships(rec["hw"], torch.device("cpu"))  # (1, K, N) soft
        assert bool(((r > 0.01) & (r < 0.99)).any()), "real masks have fractional edge tokens"
        sel = r.sum(1)[0] > gate.tau
        p0 = attention_probs(rec["q"], rec["k"], rec["heads"])
        p1 = attention_probs(rec["q"], rec["k"], rec["heads"], rec["bias"])
        a = gate.affinity(r)  # the memberships the gate decided (soft: r itself)
        m0.append(per_query_cross_mass(p0, a)[:, :, sel].flatten())
        m1.append(per_query_cross_mass(p1, a)[:, :, sel].flatten())
        soft_a = torch.einsum("bkn,bkm->bnm", r, r).clamp(max=1.0)
        m_soft.append(per_query_cross_mass(p1, soft_a)[:, :, sel].flatten())
    return tuple(float(torch.cat(x).mean()) for x in (m0, m1, m_soft))


def test_soft_gate_on_demo_masks_cuts_cross_organ_mass(tiny_model, demo_masks) -> None:
    m0, m1, _ = _cross_mass(tiny_model, demo_masks, hard=False)
    print(f"demo masks, soft gamma 4: cross-organ mass {m0:.4f} -> {m1:.4f} (x{m0 / m1:.1f} lower)")
    assert m0 > 0.3 and m1 < 0.5 * m0


def test_hard_gate_on_demo_masks_blocks_cross_organ_attention(tiny_model, demo_masks) -> None:
    m0, m1, m_soft = _cross_mass(tiny_model, demo_masks, hard=True)
    print(
        f"demo masks, hard: cross-organ mass (decided memberships) {m0:.4f} -> {m1:.2e}; "
        f"measured with the soft affinity {m_soft:.4f}"
    )
    assert m0 > 0.3
    assert m1 < 1e-3, f"hard mode must block cross-organ attention on real masks, left {m1:.4f}"


def test_hard_memberships_decide_edge_tokens() -> None:
    from cxr_pack.cxr_core.attention.contributions import SelfAttentionGate

    gate = SelfAttentionGate(masks=torch.zeros(1, 2, 4, 4), hard=True, tau=0.5)
    # tokens: inside A; edge shared A 0.4 / B 0.3 (gated, no organ above tau); background; inside B
    r = torch.tensor([[[1.0, 0.4, 0.1, 0.0], [0.0, 0.3, 0.0, 1.0]]])
    d = gate.decided(r)
    assert d.tolist() == [[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]]
    a = gate.affinity(r)[0]
    assert a[1, 0] == 1 and a[1, 3] == 0 and a[0, 3] == 0 and set(a.unique().tolist()) <= {0.0, 1.0}
    soft = SelfAttentionGate(masks=torch.zeros(1, 2, 4, 4), hard=False)
    assert torch.equal(soft.decided(r), r), "the soft gate keeps its exact spec"
