"""The gate's bias without an N x N tensor: low rank and block-sparse forms equal the dense biased attention."""

from __future__ import annotations

import pytest
import torch
from attention_probe import quadrant_masks
from cxr_pack.cxr_core.attention import contributions, engine
from cxr_pack.cxr_core.attention.contributions import SelfAttentionGate
from cxr_pack.cxr_core.attention.protocol import SiteCall
from cxr_pack.cxr_core.attention.structured_bias import (
    DENSE_ENV,
    LowRankBias,
    LowRankRows,
    TokenGroups,
    low_rank_attention,
    structured_allowed,
    structured_attention,
)
from cxr_pack.cxr_core.organ_masks import OrganMasks
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from helpers import random_cond, sample

HEADS = 2


def _backends() -> dict:
    import comfy.ldm.modules.attention as attention

    return {
        "basic": attention.attention_basic,
        "sub_quad": attention.attention_sub_quad,
        "split": attention.attention_split,
        "pytorch": attention.attention_pytorch,
    }


def _qkv(b: int, n: int, d: int = 40, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(b, n, HEADS * d, generator=g) * 2.0).to(dtype) for _ in range(3))


def _edge_masks(size: int = 96) -> torch.Tensor:
    """Two disjoint organs whose edges fall inside tokens of every grid (fractional memberships)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    left = ((xx - 30) ** 2 + (yy - 50) ** 2 < 23**2).float()
    right = ((xx - 70) ** 2 + (yy - 45) ** 2 < 19**2).float() * (1 - left)
    return torch.stack([left, right])


def _overlapping_masks(size: int = 96) -> torch.Tensor:
    m = _edge_masks(size)
    heart = torch.zeros(size, size)
    heart[40:80, 35:65] = 1.0  # over both lungs, as a heart is in projection
    return torch.cat([m, heart[None]])


def _call(hw: tuple[int, int], batch: int = 1, dtype: torch.dtype = torch.float32) -> SiteCall:
    n = hw[0] * hw[1]
    return SiteCall(("input", 1), "attn1", hw, n, n, batch, torch.device("cpu"), None, dtype)


def _dense_reference(q, k, v, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v in float64, (B, N, H*d)."""
    b, n, inner = q.shape
    d = inner // HEADS
    qh, kh, vh = (t.double().view(b, -1, HEADS, d).transpose(1, 2) for t in (q, k, v))
    logits = qh @ kh.transpose(-1, -2) / d**0.5 + bias.double()[:, None]
    return (logits.softmax(-1) @ vh).transpose(1, 2).reshape(b, n, inner)


@pytest.mark.parametrize("backend", ["basic", "sub_quad", "split", "pytorch"])
def test_low_rank_bias_equals_the_dense_bias_on_every_exact_backend(backend: str) -> None:
    q, k, v = _qkv(2, 64)
    g = torch.Generator().manual_seed(1)
    bias = LowRankBias(torch.randn(1, 64, 3, generator=g) * 3, torch.randn(1, 64, 3, generator=g))
    out = low_rank_attention(q, k, v, HEADS, bias, _backends()[backend])
    ref = _dense_reference(q, k, v, bias.dense().expand(2, -1, -1))
    assert out.shape == q.shape
    assert float((out.double() - ref).abs().max()) < 1e-4


def test_low_rank_form_with_a_backend_that_returns_the_flat_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """ComfyUI's SDPA loop for batches over SDP_BATCH_LIMIT returns (B, N, heads * d') despite skip_output_reshape."""
    import comfy.ldm.modules.attention as attention

    monkeypatch.setattr(attention, "SDP_BATCH_LIMIT", 1)  # force that loop for a batch of 2
    q, k, v = _qkv(2, 64)
    bias = LowRankBias(torch.randn(1, 64, 3) * 3, torch.randn(1, 64, 3))
    out = low_rank_attention(q, k, v, HEADS, bias, attention.attention_pytorch)
    ref = _dense_reference(q, k, v, bias.dense().expand(2, -1, -1))
    assert float((out.double() - ref).abs().max()) < 1e-4


@pytest.mark.parametrize("form", ["soft", "hard_groups", "hard_low_rank"])
@pytest.mark.parametrize("isolate", [False, True])
@pytest.mark.parametrize("masks", ["quadrants", "edges", "overlapping"])
def test_gate_structured_form_gives_the_dense_gate_attention(
    form: str, isolate: bool, masks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hard = form != "soft"
    if hard:  # either form of the hard gate on any grid (by default the grid's size picks it)
        monkeypatch.setattr(contributions, "HARD_GATE_FORM", form.removeprefix("hard_"))
    m = {"quadrants": quadrant_masks(128), "edges": _edge_masks(), "overlapping": _overlapping_masks()}[masks]
    gate = SelfAttentionGate(masks=m[None], gamma=4.0, hard=hard, isolate_background=isolate)
    hw = (16, 16) if masks == "quadrants" else (12, 12)
    call = _call(hw, batch=1)
    q, k, v = _qkv(2, hw[0] * hw[1], seed=3)
    compact = gate.structured(call)
    # overlapping organs, soft gate: the rows where min(1, r_i . r_j) clips are dense
    kind = {"hard_groups": TokenGroups, "hard_low_rank": LowRankBias}.get(
        form, LowRankRows if masks == "overlapping" else LowRankBias
    )
    assert isinstance(compact, kind), compact
    if kind is LowRankRows:
        n_rows = compact.rows.numel()
        assert 0 < n_rows < call.n_q // 2 and compact.dense.shape == (1, 1, n_rows, 144)
    dense = gate.bias(call)
    ref = _dense_reference(q, k, v, dense.expand(2, -1, -1))
    for name, fn in _backends().items():
        out = structured_attention(q, k, v, HEADS, compact, fn, items=1)
        err = float((out.double() - ref).abs().max())
        assert err < 1e-4, f"{name}: structured gate differs from the dense gate by {err}"


def test_hard_gate_form_follows_the_grid_size() -> None:
    """Block-sparse groups where the attention dominates (GROUPS_MIN_TOKENS on), the 3-operator low-rank form on
    smaller grids, where the groups' operators cost more than the attention they save."""
    assert contributions.HARD_GATE_FORM == "auto"
    gate = SelfAttentionGate(masks=_overlapping_masks(192)[None], hard=True)
    side = int(contributions.GROUPS_MIN_TOKENS**0.5)
    small, large = _call((side - 1, side - 1)), _call((side + 1, side + 1))
    assert small.n_q < contributions.GROUPS_MIN_TOKENS <= large.n_q
    assert isinstance(gate.structured(small), LowRankBias)
    assert isinstance(gate.structured(large), TokenGroups)
    per_item = SelfAttentionGate(masks=torch.stack([_edge_masks(192), _edge_masks(192).flip(-1)]), hard=True)
    assert isinstance(per_item.structured(_call((side + 1, side + 1), batch=2)), LowRankBias), (
        "groups need one mask set for the batch"
    )


def test_hard_gate_low_rank_form_blocks_exactly_like_minus_infinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contributions, "HARD_GATE_FORM", "low_rank")
    gate = SelfAttentionGate(masks=_overlapping_masks()[None], hard=True)
    call = _call((12, 12))
    compact = gate.structured(call)
    assert isinstance(compact, LowRankBias)
    assert compact.u.shape[-1] < 12, "one channel per organ class, not per token"
    q, k, v = _qkv(1, 144, seed=4)
    ref = _dense_reference(q, k, v, gate.bias(call))
    out = structured_attention(q, k, v, HEADS, compact, _backends()["pytorch"], items=1)
    assert float((out.double() - ref).abs().max()) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hard", [False, True])
def test_structured_gate_in_half_precision(dtype: torch.dtype, hard: bool, monkeypatch) -> None:
    monkeypatch.setattr(
        contributions, "HARD_GATE_FORM", "low_rank"
    )  # the form whose blocking value meets fp16
    gate = SelfAttentionGate(masks=_edge_masks()[None], hard=hard)
    call = _call((12, 12), dtype=dtype)
    q, k, v = _qkv(2, 144, seed=5, dtype=dtype)
    out = structured_attention(q, k, v, HEADS, gate.structured(call), _backends()["pytorch"], items=1)
    ref = _dense_reference(q, k, v, gate.bias(_call((12, 12))).expand(2, -1, -1))
    assert torch.isfinite(out).all()
    tol = 0.02 if dtype == torch.float16 else 0.1
    assert float((out.double() - ref).abs().max()) < tol


def test_per_item_masks_repeat_over_cond_and_uncond_chunks() -> None:
    m = torch.stack([quadrant_masks(128), quadrant_masks(128).flip(-1)])  # (2 items, K, H, W)
    gate = SelfAttentionGate(masks=m, gamma=4.0)
    call = _call((16, 16), batch=2)
    compact = gate.structured(call)
    assert compact.u.shape[0] == 2
    q, k, v = _qkv(4, 256, seed=6)  # [cond item 0, cond item 1, uncond item 0, uncond item 1]
    out = low_rank_attention(q, k, v, HEADS, compact, _backends()["pytorch"], items=2)
    dense = gate.bias(call)
    ref = _dense_reference(q, k, v, torch.cat([dense, dense]))
    assert float((out.double() - ref).abs().max()) < 1e-4


def test_hard_gate_with_a_mask_set_per_item_uses_the_low_rank_form() -> None:
    """Block-sparse groups need one mask set for the batch; per-item sets take the low-rank form, still exact."""
    m = torch.stack([_edge_masks(), _edge_masks().flip(-1)])  # (2 items, K, H, W)
    gate = SelfAttentionGate(masks=m, hard=True, isolate_background=True)
    call = _call((12, 12), batch=2)
    compact = gate.structured(call)
    assert isinstance(compact, LowRankBias) and compact.u.shape[0] == 2
    q, k, v = _qkv(4, 144, seed=10)  # two items, cond and uncond
    out = low_rank_attention(q, k, v, HEADS, compact, _backends()["pytorch"], items=2)
    dense = gate.bias(call)
    ref = _dense_reference(q, k, v, torch.cat([dense, dense]))
    assert float((out.double() - ref).abs().max()) < 1e-4


def test_structured_form_only_on_exact_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    import comfy.ldm.modules.attention as attention

    assert structured_allowed(attention.attention_pytorch, {})
    assert structured_allowed(attention.attention_sub_quad, {})
    assert not structured_allowed(attention.attention_sage, {}), "sage quantises q and k"
    assert not structured_allowed(attention.attention_pytorch, {"optimized_attention_override": print})
    monkeypatch.setenv(DENSE_ENV, "1")
    assert not structured_allowed(attention.attention_pytorch, {})


# soft gate (label map, overlapping organs) and both forms of the hard gate
GATE_FORMS = [
    (False, "edges", "auto"),
    (True, "edges", "groups"),
    (True, "edges", "low_rank"),
    (False, "overlapping", "auto"),
]


def _gated(model, hard: bool, masks: torch.Tensor):
    names = ("left_lung", "heart", "mediastinum")[: masks.shape[0]]
    organs = OrganMasks(names=names, masks=masks, image_size=tuple(masks.shape[-2:]))
    return AnatomyAttentionGate.execute(
        model, organs, organs="all", strength=4.0, hard=hard, tau=0.5, sites="64,32", start_percent=0.0,
        end_percent=1.0, background="free", enabled=True,
    ).result[0]  # fmt: skip


@pytest.mark.parametrize(("hard", "layout", "form"), GATE_FORMS)
def test_sampling_with_the_structured_gate_matches_the_dense_gate(
    tiny_model, hard: bool, layout: str, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real UNet, CFG batch: the structured path runs (no N x N bias is built) and gives the same latent.

    Overlapping organs (a heart over both lungs): the soft gate's low-rank form with dense rows."""
    monkeypatch.setattr(contributions, "HARD_GATE_FORM", form)
    masks = _edge_masks(128) if layout == "edges" else _overlapping_masks(128)
    pos, neg = random_cond(1), random_cond(2)
    dense_built, structured_calls = [], []
    orig_bias, orig_attn = SelfAttentionGate._bias, engine.structured_attention
    monkeypatch.setattr(
        SelfAttentionGate, "_bias", lambda self, call: dense_built.append(call.hw) or orig_bias(self, call)
    )
    monkeypatch.setattr(
        engine, "structured_attention", lambda *a, **kw: structured_calls.append(1) or orig_attn(*a, **kw)
    )  # fmt: skip
    fast = sample(_gated(tiny_model, hard, masks), pos, neg, seed=3, steps=3)
    assert structured_calls and not dense_built, "the structured path must run and never build the dense bias"
    monkeypatch.setenv(DENSE_ENV, "1")
    dense = sample(_gated(tiny_model, hard, masks), pos, neg, seed=3, steps=3)
    assert dense_built
    plain = sample(tiny_model, pos, neg, seed=3, steps=3)
    scale = float(dense.abs().max())  # random weights: latents in the hundreds
    assert float((fast - dense).abs().max()) < 1e-5 * scale, "float32 rounding only"
    assert float((dense - plain).abs().max()) > 1e-2 * scale, (
        "the gate must change the sample (else the check is empty)"
    )


@pytest.mark.parametrize(("hard", "layout", "form"), GATE_FORMS)
def test_gradients_through_the_structured_gate_match_the_dense_gate(
    hard: bool, layout: str, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The corrector's gradient pass runs through the gate: both forms give the same gradient w.r.t. q, k, v."""
    monkeypatch.setattr(contributions, "HARD_GATE_FORM", form)
    masks = _edge_masks() if layout == "edges" else _overlapping_masks()
    gate = SelfAttentionGate(masks=masks[None], hard=hard)
    call = _call((12, 12))
    fn = _backends()["pytorch"]
    q, k, v = (t.requires_grad_(True) for t in _qkv(1, 144, seed=8))
    weight = torch.randn(q.shape, generator=torch.Generator().manual_seed(9))
    compact = (structured_attention(q, k, v, HEADS, gate.structured(call), fn, items=1) * weight).sum()
    grads_compact = torch.autograd.grad(compact, (q, k, v))
    dense = (fn(q, k, v, HEADS, mask=gate.bias(call).unsqueeze(1)) * weight).sum()
    grads_dense = torch.autograd.grad(dense, (q, k, v))
    for name, a, b in zip("qkv", grads_compact, grads_dense, strict=True):
        assert float((a - b).abs().max()) < 1e-4 * float(b.abs().max()), f"d/d{name}"


def test_low_rank_form_is_for_self_attention_and_says_so() -> None:
    q, k, v = _qkv(1, 64)
    bias = LowRankBias(torch.randn(1, 64, 3), torch.randn(1, 48, 3))
    with pytest.raises(ValueError, match=r"one shape \(self-attention\), got \(1, 64, 80\), \(1, 48, 80\)"):
        low_rank_attention(q, k[:, :48], v[:, :48], HEADS, bias, _backends()["pytorch"])


def test_soft_gate_keeps_the_dense_bias_where_most_rows_clip_or_masks_differ_per_item() -> None:
    """The dense rows pay only while they are few: organs that overlap nearly everywhere keep the dense bias,
    as do overlapping masks set per batch item (their clipping rows differ)."""
    full = torch.ones(2, 96, 96)  # two organs over the whole image: every row clips
    assert SelfAttentionGate(masks=full[None]).structured(_call((12, 12))) is None
    per_item = torch.stack([_overlapping_masks(), _overlapping_masks().flip(-1)])
    assert SelfAttentionGate(masks=per_item).structured(_call((12, 12), batch=2)) is None
    assert isinstance(
        SelfAttentionGate(masks=_overlapping_masks()[None]).structured(_call((12, 12))), LowRankRows
    )


def test_soft_gate_with_overlap_but_no_gated_row_that_clips_is_plain_low_rank() -> None:
    """Memberships past 1 only on tokens that are not gated (tau above their total): no row needs its dense one."""
    m = torch.ones(2, 96, 96)
    m[1] = 0.2  # every token: r = (1, 0.2), |r|^2 = 1.04, total 1.2
    gate = SelfAttentionGate(masks=m[None], tau=1.2)
    call = _call((12, 12))
    compact = gate.structured(call)
    assert isinstance(compact, LowRankBias)
    q, k, v = _qkv(2, 144, seed=4)
    ref = _dense_reference(q, k, v, gate.bias(call).expand(2, -1, -1))
    out = structured_attention(q, k, v, HEADS, compact, _backends()["pytorch"], items=1)
    assert float((out.double() - ref).abs().max()) < 1e-4
