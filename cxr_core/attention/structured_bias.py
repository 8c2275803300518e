"""Attention with a structured logit bias that is never built as an Nq x Nk tensor (docs/METHOD.md, "Engine").

The self-attention gate's bias depends only on which organs the query and the key
belong to, so it has two exact compact forms:

- Low rank: ``B_ij = u_i . w_j + c_i``. Softmax ignores a per-row constant c_i, and
  ``q k^T / sqrt(d) + u w^T`` is the scaled product of ``[q a, u]`` and ``[k, w b]``
  (a and b undo the backend's own ``1/sqrt(d')`` scale), so the bias rides in R extra
  channels of q and k. Any attention kernel then runs unmasked: flash attention stays
  available and no N x N bias is allocated.
- Low rank with dense rows: where organs overlap, ``min(1, r_i . r_j)`` clips for the queries that
  share more than one organ with some key; those rows get their dense bias row, all others the
  low-rank form (used while they are at most half of the queries).
- Token groups (block-sparse): the hard gate's bias is 0 or -inf by the classes of
  query and key, so the queries of one class attend only to the keys their class may
  see. The work is the sum of the allowed blocks instead of the whole N x N square.

Both give the dense biased attention within float tolerance (tests/test_structured_bias.py).
They are used only where they are exact and the backend computes plain dot products
(sage attention quantises q and k, so it keeps the dense bias).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .site_masks import match_batch

# A logit this far below every other one is exactly 0 after softmax in fp32, fp16 and bf16
# (exp(-1e4) underflows) and stays finite in half-precision q; it stands for -inf in a low-rank bias.
BLOCKED = -1.0e4

# Backends that compute softmax(q k^T / sqrt(d)) v with exact dot products (ComfyUI's function names).
EXACT_BACKENDS = frozenset(
    {
        "attention_basic",
        "attention_sub_quad",
        "attention_split",
        "attention_pytorch",
        "attention_xformers",
        "attention_flash",
    }
)
DENSE_ENV = "CXR_ATTENTION_DENSE_BIAS"  # "1": always build the dense bias (benchmarks, troubleshooting)


@dataclass(frozen=True)
class LowRankBias:
    """bias_ij = u_i . w_j (+ a per-query constant that softmax ignores)."""

    u: torch.Tensor  # (Bm, Nq, R)
    w: torch.Tensor  # (Bm, Nk, R)
    # the extra channels as each call shape needs them; the bias lives in one run's cache, and so does this
    _channels: dict = field(default_factory=dict, compare=False, repr=False)

    def dense(self) -> torch.Tensor:
        """The (Bm, Nq, Nk) bias it stands for (tests and observers only)."""
        return self.u @ self.w.transpose(1, 2)

    def channels(self, b: int, items: int, heads: int, d: int, dp: int, dtype: torch.dtype) -> torch.Tensor:
        """The extra channels of q, k and v for head size d padded to dp: (3, B, N, heads, dp - d) in ``dtype``.

        q's carry u, k's carry w (times sqrt(dp), undoing the backend's 1/sqrt(dp)), v's are zeros. Built
        once per call shape (batch, heads, head size, dtype), so that a call adds only its concatenation: on
        a GPU whose step is launch-bound, every kernel per call counts. The heads share one copy (expanded).
        """
        key = (b, items, heads, d, dp, dtype)
        ready = self._channels.get(key)
        if ready is None:
            u = _per_item(self.u.to(dtype), b, items)  # (B, N, R)
            w = _per_item(self.w.to(dtype), b, items) * math.sqrt(dp)
            extra = u.new_zeros(3, b, u.shape[1], 1, dp - d)
            extra[0, :, :, 0, : u.shape[-1]] = u
            extra[1, :, :, 0, : w.shape[-1]] = w
            ready = extra.expand(-1, -1, -1, heads, -1)
            self._channels[key] = ready
        return ready


@dataclass(frozen=True)
class LowRankRows:
    """A low-rank bias exact on every query row but a few, whose rows are given densely.

    The soft gate on organs that overlap: ``min(1, r_i . r_j)`` clips only for queries that share more
    than one organ with some key, so those rows get their dense bias row and every other row rides in
    the low-rank channels; (rows x N) instead of N x N.
    """

    low: LowRankBias  # exact for every row not in ``rows``
    rows: torch.Tensor  # (R,) long: the query rows the low-rank form does not give exactly
    dense: torch.Tensor  # (1, 1, R, Nk): those rows' bias, broadcast over batch and heads


KeySet = (
    tuple[int, int] | torch.Tensor | None
)  # a run [start, stop) of the sorted tokens, sorted positions, or all


@dataclass(frozen=True)
class TokenGroups:
    """A block-sparse hard mask over the tokens sorted by class: each class's queries are one run.

    A class attends only to its key set: None (every key), a run of the sorted tokens (a class that
    sees only itself, or consecutive classes), or the sorted positions it sees. The order is found
    once per grid and run; a call gathers q, k and v into it, so most key sets are slices, and adds
    a stack, one gather, one concatenation and one gather back instead of a gather and a scatter per class
    (launches are what a GPU step at 512 px pays for).
    """

    order: torch.Tensor  # (N,) long: the tokens sorted by class
    inverse: torch.Tensor  # (N,) long: where each token is in ``order``
    queries: tuple[tuple[int, int], ...]  # per class: its run [start, stop) in the sorted tokens
    keys: tuple[KeySet, ...]

    @staticmethod
    def from_classes(cls: torch.Tensor, allowed: list[list[bool]]) -> TokenGroups:
        """Groups from each token's class (N,) and which key classes each query class sees (P x P).

        Every class 0..P-1 has tokens (``cls`` is torch.unique's inverse).
        """
        order = torch.argsort(cls, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        counts = torch.bincount(cls, minlength=len(allowed)).tolist()
        starts = [sum(counts[:p]) for p in range(len(counts) + 1)]
        keys: list[KeySet] = []
        for row in allowed:
            seen = [p for p, ok in enumerate(row) if ok]
            if len(seen) == len(counts):
                keys.append(None)
            elif seen == list(range(seen[0], seen[-1] + 1)):
                keys.append((starts[seen[0]], starts[seen[-1] + 1]))
            else:
                keys.append(
                    torch.cat([torch.arange(starts[p], starts[p + 1], device=cls.device) for p in seen])
                )
        queries = tuple((starts[p], starts[p + 1]) for p in range(len(counts)))
        return TokenGroups(order, inverse, queries, tuple(keys))


StructuredBias = LowRankBias | LowRankRows | TokenGroups


def structured_allowed(attention_fn: Callable, extra_options: dict) -> bool:
    """Whether the host's attention can take a structured bias instead of a dense one."""
    if os.environ.get(DENSE_ENV, "") == "1":
        return False
    if "optimized_attention_override" in extra_options:
        return False  # an override may quantise or reorder; it gets the dense bias it expects
    return getattr(attention_fn, "__name__", "") in EXACT_BACKENDS


def _per_item(t: torch.Tensor, total: int, items: int) -> torch.Tensor:
    """(Bm, N, R) -> (total, N, R): Bm = 1 broadcasts; Bm = items repeats once per cond/uncond chunk."""
    if t.shape[0] == 1:
        return t.expand(total, *t.shape[1:])
    return match_batch(t, items, "attention masks").repeat(total // items, 1, 1)


def low_rank_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: LowRankBias, attention_fn: Callable,
    items: int | None = None, **options,
) -> torch.Tensor:  # fmt: skip
    """softmax(q k^T / sqrt(d) + u w^T) v for self-attention's (B, N, heads * d) q, k, v, through ``attention_fn``.

    ``items``: batch items per cond/uncond chunk, when the bias has one entry per item. A call adds three
    operators: q, k and v stacked, their extra channels concatenated, and q's channels scaled by
    a = sqrt(dp / d) (the backend scales by 1/sqrt(dp)).
    """
    if not q.shape == k.shape == v.shape:
        raise ValueError(
            f"low_rank_attention: q, k and v must have one shape (self-attention), got {tuple(q.shape)}, "
            f"{tuple(k.shape)} and {tuple(v.shape)}"
        )
    b, n, inner = q.shape
    d = inner // heads
    dp = -(-(d + bias.u.shape[-1]) // 8) * 8  # head size a multiple of 8, as flash kernels want
    extra = bias.channels(b, items or b, heads, d, dp, q.dtype)
    qkv = torch.cat([torch.stack([q, k, v]).view(3, b, n, heads, d), extra], -1)  # (3, B, N, heads, dp)
    qkv[0, ..., :d].mul_(math.sqrt(dp / d))  # in place on a view (``x[i] *= a`` would copy back as well)
    q2, k2, v2 = qkv.transpose(2, 3).unbind(0)  # (B, heads, N, dp) each
    out = attention_fn(q2, k2, v2, heads, skip_reshape=True, skip_output_reshape=True, **options)
    if out.ndim == 3:  # a backend branch that reshapes anyway (ComfyUI's batched SDPA loop)
        out = out.view(b, n, heads, dp).transpose(1, 2)
    return out[..., :d].transpose(1, 2).reshape(b, n, heads * d)


def grouped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, groups: TokenGroups, attention_fn: Callable,
    **options,
) -> torch.Tensor:  # fmt: skip
    """Block-sparse attention: each class's queries through ``attention_fn`` over its own keys only."""
    qs, ks, vs = torch.stack([q, k, v])[:, :, groups.order].unbind(0)  # one gather into class order
    outs = []
    for (a, b), keys in zip(groups.queries, groups.keys, strict=True):
        if keys is None:  # every key: the order of the keys does not change attention
            kk, vv = ks, vs
        elif isinstance(keys, tuple):
            kk, vv = ks[:, keys[0] : keys[1]], vs[:, keys[0] : keys[1]]
        else:
            kk, vv = ks[:, keys], vs[:, keys]
        outs.append(attention_fn(qs[:, a:b], kk, vv, heads, **options))
    return torch.cat(outs, dim=1)[:, groups.inverse]


def low_rank_rows_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: LowRankRows, attention_fn: Callable,
    items: int | None = None, **options,
) -> torch.Tensor:  # fmt: skip
    """Every row through the low-rank form, then the few rows it does not give exactly with their dense bias."""
    out = low_rank_attention(q, k, v, heads, bias.low, attention_fn, items, **options)
    exact = attention_fn(q[:, bias.rows], k, v, heads, mask=bias.dense.to(q.dtype), **options)
    return out.index_copy(1, bias.rows, exact)


def structured_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: StructuredBias, attention_fn: Callable,
    items: int | None = None, **options,
) -> torch.Tensor:  # fmt: skip
    if isinstance(bias, TokenGroups):
        return grouped_attention(q, k, v, heads, bias, attention_fn, **options)
    if isinstance(bias, LowRankRows):
        return low_rank_rows_attention(q, k, v, heads, bias, attention_fn, items, **options)
    return low_rank_attention(q, k, v, heads, bias, attention_fn, items, **options)
