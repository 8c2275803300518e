"""The regulated prompt: one value that carries the prompt the sampler is conditioned on (docs/METHOD.md, "Prompt").

The CXR Prompt node encodes the text once and hands two things on: the
conditioning (for the sampler) and a :class:`RegulatedPrompt` (for the attention
nodes) holding the text, its token positions and the very encoding it made. So
the words the nodes regulate are the words of the sampled prompt; at the start
of every sampling call :func:`check_sampled_prompt` compares the sampler's
positive conditioning with that encoding and stops the run, naming both, if
they differ.

Token positions index the cross-attention keys: the host builds the context
from 77-token chunks, concatenated along the token axis (SDXL's two encoders
are concatenated along the feature axis, so positions are shared), and repeats
a shorter context to the length of the longest one in the batch.
:func:`context_columns` is the one mapping from positions to key columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .tokens import TokenResolutionError, find_word_tokens, parse_word_bindings, tokenize_prompt

log = logging.getLogger("cxr_counterfactual.prompt")

# key in a conditioning entry's dict: the text a CXR Prompt node encoded (for mismatch messages)
COND_TEXT_KEY = "cxr_prompt_text"


class PromptMismatchError(ValueError):
    """The sampler is conditioned on a different prompt than the one an attention node regulates."""


@dataclass(frozen=True, eq=False)
class RegulatedPrompt:
    """A prompt as encoded for the sampler, with the token positions of the words the nodes regulate."""

    text: str
    encoder: str  # the text encoder family whose tokenizer gave the positions
    n_tokens: int  # tokens in the encoded context (77 per chunk)
    encoding: torch.Tensor  # (1, n_tokens, D): the cross-attention context the prompt produced, on the CPU
    pathology: dict[str, tuple[int, ...]] = field(default_factory=dict)  # word -> positions
    anatomy: tuple[tuple[str, str, tuple[int, ...]], ...] = ()  # (word, organ spec, positions)
    prompt_words: tuple[str, ...] = ()  # the prompt's words, for error messages
    tokenizer: Any = field(default=None, repr=False)  # to resolve further words (AttentionMapCapture)

    def __deepcopy__(self, memo: dict) -> RegulatedPrompt:
        return self  # immutable; the encoding is shared, never copied

    @property
    def pathology_positions(self) -> tuple[int, ...]:
        return tuple(sorted({p for pos in self.pathology.values() for p in pos}))

    def positions(self, words: Iterable[str]) -> dict[str, tuple[int, ...]]:
        """Positions of words: the prompt's regulated words directly, any other word through the tokenizer."""
        known = {**self.pathology, **{w: pos for w, _, pos in self.anatomy}}
        out: dict[str, tuple[int, ...]] = {}
        missing = [w for w in words if w not in known]
        if missing:
            if self.tokenizer is None:
                raise TokenResolutionError(
                    f"words {missing} are not regulated words of this prompt; the regulated words are "
                    f"{', '.join(known) or '(none)'}"
                )
            found = find_word_tokens(self.tokenizer, self.text, missing)
            known.update({w: tuple(p) for w, p in found.items()})
        for w in words:
            out[w] = known[w]
        return out

    def describe(self) -> str:
        words = ", ".join(self.pathology) or "none"
        return f"'{_short(self.text)}' ({self.n_tokens} tokens, {self.encoder}; pathology words: {words})"


def build_prompt(
    tokenizer: Any,
    text: str,
    encoding: torch.Tensor,
    pathology_words: Sequence[str] = (),
    anatomy_words: str = "",
) -> RegulatedPrompt:
    """Resolve the words in ``text`` with ``tokenizer`` and pair them with the prompt's ``encoding``.

    ``tokenizer`` is a CLIP object or a ComfyUI tokenizer; ``encoding`` is the (1, T, D) context the same
    prompt was encoded to (the sampler's positive conditioning tensor).
    """
    from .tokens import encoder_family

    tokens = tokenize_prompt(tokenizer, text)
    if encoding.ndim != 3 or encoding.shape[0] != 1:
        raise ValueError(
            f"prompt encoding: expected a (1, tokens, features) tensor, received {tuple(encoding.shape)}"
        )
    if encoding.shape[1] != tokens.length:
        raise ValueError(
            f"prompt encoding: the tokenizer gives {tokens.length} tokens for this text but the encoding has "
            f"{encoding.shape[1]}; encode the same text with the same CLIP"
        )
    words = [w for w in (x.strip() for x in pathology_words) if w]
    pathology = {w: tuple(p) for w, p in find_word_tokens(tokenizer, text, words).items()} if words else {}
    bindings = parse_word_bindings(anatomy_words)
    anatomy: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
    if bindings:
        found = find_word_tokens(tokenizer, text, [w for w, _ in bindings])
        anatomy = tuple((w, organs, tuple(found[w])) for w, organs in bindings)
    return RegulatedPrompt(
        text=text, encoder=encoder_family(tokenizer), n_tokens=tokens.length,
        encoding=encoding.detach().to("cpu"), pathology=pathology, anatomy=anatomy, prompt_words=tokens.words,
        tokenizer=getattr(tokenizer, "tokenizer", tokenizer),
    )  # fmt: skip


def context_columns(
    positions: Sequence[int], n_tokens: int, n_k: int, device: torch.device | str, what: str
) -> torch.Tensor:
    """Key columns of prompt positions in a context of ``n_k`` keys.

    The host repeats a prompt of ``n_tokens`` tokens to the longest context in the batch, so n_k must be a
    whole multiple of n_tokens; anything else means the conditioning is not this prompt's, and is an error.
    """
    if n_tokens <= 0 or n_k % n_tokens:
        raise PromptMismatchError(
            f"{what}: the regulated prompt has {n_tokens} tokens ({n_tokens // 77} chunk(s) of 77) but the "
            f"cross-attention context reaching the model has {n_k}; sample with the CXR Prompt node's "
            "conditioning"
        )
    bad = [p for p in positions if not 0 <= p < n_tokens]
    if bad:
        raise ValueError(f"{what}: token positions {bad} lie outside the prompt's {n_tokens} tokens")
    reps = n_k // n_tokens
    cols = [p + j * n_tokens for j in range(reps) for p in positions]
    return torch.tensor(cols, dtype=torch.long, device=device)


def site_columns(call: Any, positions: Sequence[int], n_tokens: int, what: str) -> torch.Tensor:
    """context_columns for one attention call, made once per run (``call.cache``) and context length.

    Making the index tensor from a Python list on a GPU copies host memory to the device, which waits
    for the device; an observer that does it at every call (the capture, the energy probe) would stall
    a launch-bound step there.
    """
    return call.cached(
        ("columns", tuple(positions), n_tokens),
        lambda: context_columns(positions, n_tokens, call.n_k, call.device, what),
    )


def sampled_contexts(conds: dict) -> list[tuple[str, torch.Tensor, str | None]]:
    """(name, cross-attention tensor, CXR Prompt text or None) of every non-negative cond entry of a guider."""
    out = []
    for name, entries in (conds or {}).items():
        if name == "negative":
            continue
        for entry in entries or []:
            ctx = entry.get("cross_attn") if isinstance(entry, dict) else None
            if isinstance(ctx, torch.Tensor):
                out.append((name, ctx, entry.get(COND_TEXT_KEY)))
    return out


def check_sampled_prompt(conds: dict, prompts: Sequence[tuple[str, RegulatedPrompt]]) -> None:
    """Raise PromptMismatchError unless each regulated prompt is the encoding of a non-negative conditioning.

    ``conds`` is the guider's processed conds ({"positive": [{"cross_attn": tensor, ...}], ...});
    ``prompts`` pairs each module label with the prompt it regulates.
    """
    if not prompts:
        return
    contexts = sampled_contexts(conds)
    for label, prompt in prompts:
        if any(_same_encoding(ctx, prompt.encoding) for _, ctx, _ in contexts):
            continue
        sampled = "; ".join(_describe_context(name, ctx, text) for name, ctx, text in contexts) or "none"
        raise PromptMismatchError(
            f"{label} regulates the prompt {prompt.describe()}, but the sampler is conditioned on "
            f"{sampled}. The regulated words would not be the sampled words. Connect the CXR Prompt node's "
            "conditioning output to the sampler's positive input (and edit the prompt only there)."
        )


def _same_encoding(ctx: torch.Tensor, encoding: torch.Tensor) -> bool:
    if ctx.ndim != 3 or tuple(ctx.shape[1:]) != tuple(encoding.shape[1:]):
        return False
    ref = encoding[0].to(torch.float32)
    rows = ctx.detach().to("cpu", torch.float32)
    tol = 1e-3 * max(1.0, float(ref.abs().max()))
    return any(float((r - ref).abs().max()) <= tol for r in rows)


def _describe_context(name: str, ctx: torch.Tensor, text: str | None) -> str:
    what = (
        f"the CXR Prompt '{_short(text)}'"
        if text is not None
        else "a conditioning not made by a CXR Prompt node"
    )
    shape = tuple(ctx.shape[1:]) if ctx.ndim == 3 else tuple(ctx.shape)
    return f"{name}: {what} ({shape[0]} tokens)" if shape else f"{name}: {what}"


def _short(text: str | None, limit: int = 80) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= limit else t[: limit - 3] + "..."
