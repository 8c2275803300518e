"""Mechanism figures of docs/METHOD.md, measured from attention probabilities.

- cross-organ mass (section 1): mean over gated queries of sum_j A_ij (1 - a_ij);
- concentration (section 3): <P, p>, p the pathology tokens' map normalised to sum 1.
"""

from __future__ import annotations

import torch


def attention_probs(
    q: torch.Tensor, k: torch.Tensor, heads: int, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) per head, from projected (B, N, heads*d) tensors.

    Returns (B, heads, Nq, Nk) in float32. ``bias`` broadcasts like ComfyUI's
    attention mask: (Nq, Nk), (B or 1, Nq, Nk) or (B or 1, 1 or heads, Nq, Nk).
    """
    b, nq, inner = q.shape
    d = inner // heads
    qh = q.float().reshape(b, nq, heads, d).transpose(1, 2)  # (B, H, Nq, d)
    kh = k.float().reshape(b, k.shape[1], heads, d).transpose(1, 2)  # (B, H, Nk, d)
    logits = qh @ kh.transpose(-1, -2) * d**-0.5  # (B, H, Nq, Nk)
    if bias is not None:
        bb = bias.float()
        if bb.ndim == 3:
            bb = bb.unsqueeze(1)
        logits = logits + bb
    return logits.softmax(dim=-1)


def cross_organ_mass(probs: torch.Tensor, affinity: torch.Tensor, gated: torch.Tensor) -> torch.Tensor:
    """Per-item mean over gated queries of sum_j A_ij (1 - a_ij).

    probs (B, H, N, N); affinity (Bm, N, N); gated (Bm, N) bool. Returns (B,).
    """
    mass = (probs * (1.0 - affinity).unsqueeze(1)).sum(-1).mean(1)  # (B, N), mean over heads
    g = gated.expand(mass.shape[0], -1).float()
    return (mass * g).sum(-1) / g.sum(-1).clamp(min=1.0)


def per_query_cross_mass(probs: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """sum_j A_ij (1 - a_ij) for every head and query: (B, H, N)."""
    return (probs * (1.0 - affinity).unsqueeze(1)).sum(-1)


def token_map(probs: torch.Tensor, columns: list[int] | torch.Tensor) -> torch.Tensor:
    """Attention map of a token set: sum over its columns, mean over heads, normalised to 1. (B, Nq)."""
    m = probs[..., columns].sum(-1).mean(1)  # (B, Nq)
    return m / m.sum(-1, keepdim=True).clamp(min=1e-12)


def concentration(token_maps: torch.Tensor, prior_tokens: torch.Tensor) -> torch.Tensor:
    """<P, p> per item: token_maps (B, N) normalised to 1, prior_tokens (Bm, N) in [0, 1]. Returns (B,)."""
    return (token_maps * prior_tokens).sum(-1)


def predicted_gated_mass(unregulated: torch.Tensor, gamma: float) -> torch.Tensor:
    """Cross-organ mass after a soft gate with binary memberships, per query.

    With a logit penalty gamma on a fraction m of the attention mass, the
    softmax gives m e^-gamma / (1 - m + m e^-gamma): about m e^-gamma when m is small.
    """
    e = torch.exp(torch.tensor(-gamma, dtype=unregulated.dtype))
    return unregulated * e / (1.0 - unregulated + unregulated * e)
