"""Find the token positions of prompt words (docs/METHOD.md sections 2-4).

Positions index the conditioning ComfyUI builds from the prompt: one 77-token
chunk per started 77 tokens, concatenated, so chunk c position p is c*77 + p.
Tokenisation is the host's own (weights syntax such as ``(effusion:1.3)`` is
parsed away first), and a word is matched as the exact BPE sequence the same
tokenizer gives it alone, so multi-token words and repeats are found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")


class TokenResolutionError(ValueError):
    pass


@dataclass(frozen=True)
class PromptTokens:
    """Token ids of a prompt, flattened across chunks (length = 77 * chunks for SD1)."""

    ids: tuple[int, ...]
    chunk_len: int
    words: tuple[str, ...]  # the prompt's words, for error messages

    @property
    def length(self) -> int:
        return len(self.ids)


# the host tokenizer's stream keys -> the text encoder family (docs/METHOD.md, "Prompt")
ENCODER_FAMILIES: dict[frozenset[str], str] = {
    frozenset({"l"}): "SD1 CLIP-L",
    frozenset({"h"}): "SD2 OpenCLIP-H",
    frozenset({"g", "l"}): "SDXL CLIP-L + CLIP-G",
}


def _host_tokenizer(clip_or_tokenizer: object) -> object:
    tok = getattr(clip_or_tokenizer, "tokenizer", clip_or_tokenizer)
    if not hasattr(tok, "tokenize_with_weights"):
        raise TokenResolutionError(
            f"clip: expected a CLIP model (CLIP socket) or a ComfyUI tokenizer, received {type(clip_or_tokenizer).__name__}"
        )
    return tok


def _family(keys: frozenset[str]) -> str:
    if keys not in ENCODER_FAMILIES:
        raise TokenResolutionError(
            f"clip: this text encoder ({', '.join(sorted(keys))}) is not one whose words the pack can map to "
            f"attention columns; supported: {', '.join(ENCODER_FAMILIES.values())} (SD1.x, SD2.x and SDXL)"
        )
    return ENCODER_FAMILIES[keys]


def encoder_family(clip_or_tokenizer: object) -> str:
    """The text encoder family of a CLIP/tokenizer; one whose words the pack cannot map is refused by name."""
    return _family(frozenset(_host_tokenizer(clip_or_tokenizer).tokenize_with_weights("a")))


def _sd_tokenizer(clip_or_tokenizer: object) -> tuple[object, str]:
    """The host tokenizer object and the key of the stream whose token positions index the context.

    SDXL concatenates its CLIP-L and CLIP-G streams along the feature axis, token for token, so the CLIP-L
    positions are the context's positions; SD1 has only "l" and SD2 only "h".
    """
    tok = _host_tokenizer(clip_or_tokenizer)
    keys = frozenset(tok.tokenize_with_weights("a"))
    _family(keys)
    return tok, ("l" if "l" in keys else "h")


def tokenize_prompt(clip_or_tokenizer: object, text: str) -> PromptTokens:
    tok, key = _sd_tokenizer(clip_or_tokenizer)
    chunks = tok.tokenize_with_weights(text)[key]
    ids = tuple(int(t[0]) if not hasattr(t[0], "shape") else -1 for chunk in chunks for t in chunk)
    words = tuple(dict.fromkeys(w.lower() for w in _WORD_RE.findall(_strip_weights(text))))
    return PromptTokens(ids=ids, chunk_len=len(chunks[0]) if chunks else 77, words=words)


def word_token_ids(clip_or_tokenizer: object, word: str) -> tuple[int, ...]:
    """The BPE ids the tokenizer gives ``word`` on its own (start/end/padding removed)."""
    tok, key = _sd_tokenizer(clip_or_tokenizer)
    empty = tok.tokenize_with_weights("")[key][0]
    chunk = tok.tokenize_with_weights(word, disable_weights=True)[key][0]
    start = 1 if empty and chunk and empty[0][0] == chunk[0][0] else 0
    end_id = empty[start][0] if len(empty) > start else None
    out: list[int] = []
    for t in chunk[start:]:
        if t[0] == end_id:
            break
        out.append(int(t[0]))
    return tuple(out)


def find_word_tokens(
    clip_or_tokenizer: object, text: str, words: list[str] | tuple[str, ...]
) -> dict[str, list[int]]:
    """Token positions of each word (or phrase) in the prompt.

    Returns {word: sorted positions}; every occurrence counts. A word missing
    from the prompt raises an error that lists the prompt's words.
    """
    prompt = tokenize_prompt(clip_or_tokenizer, text)
    found: dict[str, list[int]] = {}
    for word in words:
        w = word.strip()
        if not w:
            continue
        seq = word_token_ids(clip_or_tokenizer, w)
        if not seq:
            raise TokenResolutionError(
                f"word '{word}' tokenises to nothing; give a plain word such as 'effusion'"
            )
        pos = _find_subsequence(prompt.ids, seq)
        if not pos:
            raise TokenResolutionError(
                f"word '{w}' is not in the prompt; the prompt's words are: {', '.join(prompt.words) or '(none)'}"
            )
        found[w] = pos
    return found


def pathology_columns(clip_or_tokenizer: object, text: str, words: list[str]) -> list[int]:
    """Sorted token positions of all the given words together (each must be in the prompt)."""
    return sorted({i for pos in find_word_tokens(clip_or_tokenizer, text, words).values() for i in pos})


def _find_subsequence(ids: tuple[int, ...], seq: tuple[int, ...]) -> list[int]:
    n = len(seq)
    out: list[int] = []
    for i in range(len(ids) - n + 1):
        if ids[i : i + n] == seq:
            out.extend(range(i, i + n))
    return sorted(set(out))


def _strip_weights(text: str) -> str:
    return re.sub(r":\s*-?[0-9.]+\s*\)", ")", text)


def parse_word_list(text: str) -> list[str]:
    """Comma-separated words or phrases: "pleural, effusion" -> ["pleural", "effusion"]."""
    return [w.strip() for w in (text or "").split(",") if w.strip()]


def parse_word_bindings(text: str) -> list[tuple[str, str]]:
    """Word-to-organ pairs, one per line or comma: "heart=heart, lungs=left_lung+right_lung"."""
    pairs: list[tuple[str, str]] = []
    for item in re.split(r"[,\n]", text or ""):
        item = item.strip()
        if not item:
            continue
        if "=" not in item and ":" not in item:
            raise TokenResolutionError(
                f"anatomy binding '{item}': expected word=organ (e.g. 'heart=heart' or 'lungs=left_lung+right_lung')"
            )
        word, organ = re.split(r"[=:]", item, maxsplit=1)
        pairs.append((word.strip(), organ.strip()))
    return pairs
