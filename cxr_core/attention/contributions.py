"""The three attention contributions of the method, as additive logit biases.

Each contribution is an immutable value that meets the engine's protocol
(protocol.py: kind, branch, window, role) and returns a compact bias for one site call:
(Bm, Nq, Nk) with Bm = 1 (broadcast) or one entry per batch item. The engine
(engine.py) sums them and hands one bias to ComfyUI's attention.

- SelfAttentionGate: docs/METHOD.md section 1, B_ij = -gamma (1 - a_ij).
- AnatomyTokenGate: section 2, C_i,tau = -gamma_a (1 - r_ik).
- PathologyReweight: section 3, C_i,tau = P_i ln(lambda_in) - (1 - P_i) ln(lambda_out).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .prompt import RegulatedPrompt, context_columns
from .protocol import SiteCall
from .schedule import Window
from .site_masks import mask_to_site
from .structured_bias import BLOCKED, LowRankBias, LowRankRows, StructuredBias, TokenGroups

log = logging.getLogger("cxr_counterfactual.attention")
NEG_INF = float("-inf")
# How the hard gate runs without a dense bias: "auto" (block-sparse groups from GROUPS_MIN_TOKENS tokens on, the
# low-rank form below), or always "groups" or "low_rank" (scripts/benchmark_attention.py compares them)
HARD_GATE_FORM = "auto"
# Groups cost about 18 operators per call against the low-rank form's 3: they pay off only where the attention
# itself dominates. On an H100 (docs/BENCHMARKS.md) they lost the whole 512-px run (64x64 and 32x32 sites) to
# the dense mask, and won 0.32x of it per call at 128x128 (16384 tokens). 96x96 (768 px) is the first grid on.
GROUPS_MIN_TOKENS = 8192


@dataclass(frozen=True, eq=False)
class SelfAttentionGate:
    """Confine gated queries' self-attention to keys of their own organ(s)."""

    masks: torch.Tensor  # (Bm, K, H, W) selected organs, [0, 1]
    gamma: float = 4.0
    hard: bool = False
    tau: float = 0.5
    isolate_background: bool = False
    window: Window = field(default_factory=Window)
    kind: str = "attn1"
    cond_only: bool = False
    prompt: RegulatedPrompt | None = None  # the gate reads no prompt

    role: ClassVar[str] = "bias"
    label: ClassVar[str] = "AnatomyAttentionGate"

    def memberships(self, hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Soft memberships r_ik: each organ mask area-averaged onto the site's grid. (Bm, K, N)."""
        return mask_to_site(self.masks.to(device), hw)

    def decided(self, r: torch.Tensor) -> torch.Tensor:
        """The memberships the gate works with: r itself (soft), or decided per token at tau (hard).

        Hard: a token belongs to every organ with r_ik > tau; a gated token (sum_k r_ik > tau) with no
        organ above tau, such as an edge token shared by two organs, belongs to its strongest organ.
        So every affinity is 0 or 1 on any mask, not only on masks that are 0/1 on the token grid.
        """
        if not self.hard:
            return r
        b = r > self.tau  # (Bm, K, N)
        gated = r.sum(dim=1) > self.tau  # (Bm, N)
        strongest = torch.zeros_like(b).scatter_(1, r.argmax(dim=1, keepdim=True), True)
        b |= strongest & (gated & ~b.any(dim=1))[:, None, :]
        return b.to(r.dtype)

    def affinity(self, r: torch.Tensor) -> torch.Tensor:
        """a_ij = min(1, sum_k r_ik r_jk) on the decided memberships. (Bm, N, N)."""
        d = self.decided(r)
        return torch.einsum("bkn,bkm->bnm", d, d).clamp_(max=1.0)

    def bias(self, call: SiteCall) -> torch.Tensor:
        return call.cached(("gate", id(self)), lambda: self._bias(call))

    def _bias(self, call: SiteCall) -> torch.Tensor:
        r = self.memberships(call.hw, call.device)  # (Bm, K, N)
        s = r.sum(dim=1)  # (Bm, N) total membership of each token
        gated = s > self.tau  # (Bm, N)
        a = self.affinity(r.to(call.dtype))  # (Bm, N, N): built in the attention's dtype, no fp32 N x N copy
        if self.hard:
            pen = torch.zeros_like(a).masked_fill_(a < 0.5, NEG_INF)
        else:
            pen = (a - 1.0).mul_(self.gamma)
        if self.isolate_background:
            in_organ = s.clamp(max=1.0)  # (Bm, N) key membership
            bg = (
                torch.zeros_like(in_organ).masked_fill_(s > self.tau, NEG_INF)
                if self.hard
                else in_organ * -self.gamma
            )
            bias = torch.where(gated[:, :, None], pen, bg.to(call.dtype)[:, None, :])
        else:
            bias = pen.masked_fill_(~gated[:, :, None], 0.0)
        if self.hard:
            bias.diagonal(dim1=1, dim2=2).clamp_(min=0.0)  # a query always keeps its own key: no all -inf row
        return bias  # (Bm, N, N)

    def structured(self, call: SiteCall) -> StructuredBias | None:
        """The same bias without an N x N tensor (structured_bias.py), or None where only the dense one is exact."""
        return call.cached(("gate-structured", id(self)), lambda: self._structured(call))

    def _structured(self, call: SiteCall) -> StructuredBias | None:
        r = self.memberships(call.hw, call.device)  # (Bm, K, N)
        if self.hard:
            return self._classes(r)
        if float((r * r).sum(dim=1).max()) > 1.0 + 1e-6:  # once per grid and run (cached)
            return self._overlapping(r, call)  # min(1, r_i . r_j) may clip: some rows need their dense row
        return self._low_rank(r)

    def _low_rank(self, r: torch.Tensor) -> LowRankBias:
        """The soft gate as u w^T, exact on every row where min(1, r_i . r_j) does not clip."""
        s = r.sum(dim=1)  # (Bm, N)
        gated = (s > self.tau)[..., None]
        rt = r.transpose(1, 2)  # (Bm, N, K)
        u = rt * gated * self.gamma  # gated rows: gamma r_i . r_j = -gamma (1 - a_ij) + gamma
        w = rt
        if self.isolate_background:
            u = torch.cat([u, (~gated).to(r.dtype)], dim=-1)  # background rows: -gamma min(1, s_j)
            w = torch.cat([w, (s.clamp(max=1.0) * -self.gamma)[..., None]], dim=-1)
        return LowRankBias(u, w)

    def _overlapping(self, r: torch.Tensor, call: SiteCall) -> LowRankRows | None:
        """Overlapping organs: the low-rank form with dense rows for the gated queries whose affinity clips.

        A row clips where r_i . r_j > 1 for some key j; by Cauchy-Schwarz only rows with
        |r_i| max_j |r_j| > 1 can, and those are checked exactly, in chunks. None (the dense bias) for
        masks set per batch item, or when more than half of the rows clip.
        """
        if r.shape[0] != 1:
            log.info("AnatomyAttentionGate at %dx%d: organs overlap in masks set per batch item; the soft gate "
                     "uses the dense N x N bias", *call.hw)  # fmt: skip
            return None
        r0 = r[0]  # (K, N)
        norms = r0.norm(dim=0)  # (N,)
        gated = r0.sum(dim=0) > self.tau
        candidates = (gated & (norms * norms.max() > 1.0 + 1e-6)).nonzero().flatten()
        clips = [
            (r0[:, chunk].T @ r0).amax(dim=1) > 1.0 + 1e-6 for chunk in candidates.split(2048)
        ]  # a (2048, N) block at a time
        rows = candidates[torch.cat(clips)] if clips else candidates
        if rows.numel() == 0:
            return self._low_rank(r)  # the organs overlap, but no affinity reaches past 1
        if rows.numel() > call.n_q // 2:
            log.info("AnatomyAttentionGate at %dx%d: the selected organs overlap at %d of %d tokens, so the soft "
                     "gate uses the dense N x N bias; a label map, or the hard gate, avoids it",
                     *call.hw, rows.numel(), call.n_q)  # fmt: skip
            return None
        a = (r0[:, rows].T @ r0).clamp_(max=1.0)  # (R, N): those rows' affinities
        dense = (a - 1.0).mul_(self.gamma).to(call.dtype)[None, None]
        log.info("AnatomyAttentionGate at %dx%d: the selected organs overlap; %d of %d query rows use a dense "
                 "bias row, the others the low-rank form", *call.hw, rows.numel(), call.n_q)  # fmt: skip
        return LowRankRows(self._low_rank(r), rows, dense)

    def _classes(self, r: torch.Tensor) -> StructuredBias | None:
        """Hard gate: tokens grouped by their decided organ set; a class sees the classes it shares an organ with.

        Block-sparse groups on large grids (HARD_GATE_FORM, GROUPS_MIN_TOKENS), else the classes ride in
        low-rank channels with a blocking value for -inf (also for mask sets per batch item).
        """
        b = self.decided(r) > 0.5  # (Bm, K, N)
        n_organs = b.shape[1]
        if n_organs > 62:
            return None
        bits = torch.arange(n_organs, device=b.device)[None, :, None]
        code = (b.long() << bits).sum(dim=1)  # (Bm, N): the organ set as a bit field; 0 = not gated
        codes, cls = torch.unique(code, return_inverse=True)  # (P,), (Bm, N)
        empty = codes == 0
        meet = (codes[:, None] & codes[None, :]) != 0  # (P, P)
        background_sees = empty[None, :] if self.isolate_background else torch.ones_like(meet)
        allowed = torch.where(empty[:, None], background_sees, meet)  # query class x key class
        groups = HARD_GATE_FORM == "groups" or (
            HARD_GATE_FORM == "auto" and code.shape[1] >= GROUPS_MIN_TOKENS
        )
        if groups and cls.shape[0] == 1:
            return TokenGroups.from_classes(cls[0], allowed.tolist())
        table = torch.zeros(allowed.shape, dtype=r.dtype, device=r.device).masked_fill_(~allowed, BLOCKED)
        return LowRankBias(table[cls], torch.nn.functional.one_hot(cls, len(codes)).to(r.dtype))


@dataclass(frozen=True, eq=False)
class AnatomyTokenGate:
    """Let an anatomy word's tokens shape only its own organ's region."""

    bindings: tuple[tuple[tuple[int, ...], torch.Tensor], ...]  # (token positions, (Bm, H, W) organ mask)
    prompt_len: int
    gamma: float = 4.0
    window: Window = field(default_factory=Window)
    kind: str = "attn2"
    cond_only: bool = True
    prompt: RegulatedPrompt | None = None  # the prompt the positions come from (checked against the sampler)

    role: ClassVar[str] = "bias"
    label: ClassVar[str] = "AnatomyAttentionGate (anatomy words)"

    def bias(self, call: SiteCall) -> torch.Tensor:
        return call.cached(("anatomy", id(self)), lambda: self._bias(call))

    def structured(self, call: SiteCall) -> None:
        return None  # 77 text keys: the dense bias is small

    def _bias(self, call: SiteCall) -> torch.Tensor:
        bm = max(m.shape[0] for _, m in self.bindings)
        bias = torch.zeros(bm, call.n_q, call.n_k, device=call.device, dtype=call.dtype)
        for positions, mask in self.bindings:
            r = mask_to_site(mask.to(call.device), call.hw)  # (Bm, N)
            col = (r - 1.0).mul_(self.gamma)  # -gamma (1 - r)
            cols = context_columns(positions, self.prompt_len, call.n_k, call.device, "AnatomyAttentionGate")
            bias[:, :, cols] = col.to(call.dtype).expand(bm, -1)[:, :, None].expand(-1, -1, len(cols))
        return bias  # (Bm, N, Nk)


@dataclass(frozen=True, eq=False)
class PathologyReweight:
    """Pull the pathology tokens' cross-attention toward the spatial prior."""

    prior: torch.Tensor  # (Bm, H, W) in [0, 1]
    positions: tuple[int, ...]
    prompt_len: int
    lambda_in: float = 3.0
    lambda_out: float = 3.0
    window: Window = field(default_factory=Window)
    kind: str = "attn2"
    cond_only: bool = True
    prompt: RegulatedPrompt | None = None  # the prompt the positions come from (checked against the sampler)

    role: ClassVar[str] = "bias"
    label: ClassVar[str] = "PathologyCrossAttnReweight"

    def bias(self, call: SiteCall) -> torch.Tensor:
        return call.cached(("pathology", id(self)), lambda: self._bias(call))

    def structured(self, call: SiteCall) -> None:
        return None  # 77 text keys: the dense bias is small

    def _bias(self, call: SiteCall) -> torch.Tensor:
        p = mask_to_site(self.prior.to(call.device), call.hw)  # (Bm, N)
        col = p * math.log(self.lambda_in) - (1.0 - p) * math.log(self.lambda_out)  # (Bm, N)
        cols = context_columns(
            self.positions, self.prompt_len, call.n_k, call.device, "PathologyCrossAttnReweight"
        )
        bias = torch.zeros(p.shape[0], call.n_q, call.n_k, device=call.device, dtype=call.dtype)
        bias[:, :, cols] = col.to(call.dtype)[:, :, None].expand(-1, -1, len(cols))
        return bias  # (Bm, N, Nk)
