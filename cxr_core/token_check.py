"""The editor's prompt check: tokens of a prompt and where its regulated words land.

Used by the server route in nodes/editor_routes.py, which the CXR Prompt node's
editor code (js/cxr_tokens.js) calls while the user types. Tokenisation is the
pack's own (cxr_core/attention/tokens.py), so the editor shows exactly the
positions the attention nodes will regulate.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from .attention.tokens import (
    TokenResolutionError,
    find_word_tokens,
    parse_word_bindings,
    parse_word_list,
    tokenize_prompt,
    word_token_ids,
)

log = logging.getLogger("cxr_counterfactual.token_check")

MAX_TEXT_CHARS = 4000
MAX_WORDS = 32


class TokenCheckError(ValueError):
    """Bad request content: the message names the field, what was expected and what was received."""


def _sd1() -> object:
    import comfy.sd1_clip

    return comfy.sd1_clip.SD1Tokenizer()


def _sd2() -> object:
    import comfy.text_encoders.sd2_clip

    return comfy.text_encoders.sd2_clip.SD2Tokenizer()


def _sdxl() -> object:
    import comfy.sdxl_clip

    return comfy.sdxl_clip.SDXLTokenizer()


# The text-encoder families of the pack's models (SD1.x, SD2.x, SDXL): the host's bundled tokenizers.
FAMILIES = {"sd1": _sd1, "sd2": _sd2, "sdxl": _sdxl}


@functools.cache
def host_tokenizer(family: str) -> object:
    if family not in FAMILIES:
        raise TokenCheckError(f"family: expected one of {sorted(FAMILIES)}, received {family!r}")
    log.info("loading the host's %s tokenizer for the editor's prompt check", family)
    return FAMILIES[family]()


@dataclass(frozen=True)
class TokenRequest:
    text: str
    pathology_words: str = ""
    anatomy_words: str = ""
    family: str = "sd1"

    @classmethod
    def from_json(cls, body: Any) -> TokenRequest:
        if not isinstance(body, dict):
            raise TokenCheckError(f"body: expected a JSON object, received {type(body).__name__}")
        unknown = sorted(set(body) - {"text", "pathology_words", "anatomy_words", "family"})
        if unknown:
            raise TokenCheckError(
                f"body: unknown fields {unknown}; expected text, pathology_words, anatomy_words, family"
            )
        values = {}
        for name, default in (
            ("text", None),
            ("pathology_words", ""),
            ("anatomy_words", ""),
            ("family", "sd1"),
        ):
            value = body.get(name, default)
            if not isinstance(value, str):
                raise TokenCheckError(f"{name}: expected a string, received {type(value).__name__}")
            if len(value) > MAX_TEXT_CHARS:
                raise TokenCheckError(
                    f"{name}: expected at most {MAX_TEXT_CHARS} characters, received {len(value)}"
                )
            values[name] = value
        if values["family"] not in FAMILIES:
            raise TokenCheckError(
                f"family: expected one of {sorted(FAMILIES)}, received {values['family']!r}"
            )
        return cls(**values)


def check_prompt(tokenizer: object, req: TokenRequest) -> dict[str, Any]:
    """Tokens of ``req.text`` and, per regulated word, its positions, its token count and a status.

    Status: "ok"; "missing" (not in the prompt); "split" (found, but the
    tokenizer cuts it into several tokens, so one word is regulated through
    several columns); "empty" (tokenises to nothing).
    """
    try:
        bindings = parse_word_bindings(req.anatomy_words)
    except TokenResolutionError as exc:
        raise TokenCheckError(f"anatomy_words: {exc}") from exc
    words = [("pathology", w) for w in parse_word_list(req.pathology_words)]
    words += [("anatomy", w) for w, _ in bindings]
    if len(words) > MAX_WORDS:
        raise TokenCheckError(
            f"pathology_words + anatomy_words: expected at most {MAX_WORDS} words, received {len(words)}"
        )

    prompt = tokenize_prompt(tokenizer, req.text)
    special = set(tokenize_prompt(tokenizer, "").ids)  # start, end and padding ids
    results, tagged = [], {}
    for role, word in words:
        ids = word_token_ids(tokenizer, word)
        entry = {"word": word, "role": role, "token_count": len(ids), "positions": []}
        if not ids:
            entry["status"] = "empty"
        else:
            try:
                entry["positions"] = find_word_tokens(tokenizer, req.text, [word])[word]
                entry["status"] = "split" if len(ids) > 1 else "ok"
            except TokenResolutionError:
                entry["status"] = "missing"
        for p in entry["positions"]:
            tagged.setdefault(p, []).append(word)
        results.append(entry)

    tokens = []  # the prompt's own tokens (start, end and padding left out), at their conditioning positions
    for i, tid in enumerate(prompt.ids):
        if tid in special and i not in tagged:
            continue
        text = "<embedding>" if tid < 0 else _token_text(tokenizer, tid)
        word_end = text.endswith("</w>")  # CLIP's BPE marks the last piece of a word
        tokens.append({"index": i, "id": tid, "text": text.removesuffix("</w>"), "word_end": word_end,
                       "words": tagged.get(i, [])})  # fmt: skip
    return {
        "family": req.family,
        "length": prompt.length,
        "chunk_len": prompt.chunk_len,
        "tokens": tokens,
        "words": results,
        "missing": [r["word"] for r in results if r["status"] in ("missing", "empty")],
        "split": [r["word"] for r in results if r["status"] == "split"],
    }


def _token_text(tokenizer: object, token_id: int) -> str:
    pairs = tokenizer.untokenize([(token_id, 1.0)])
    return str(pairs[0][1]) if pairs else str(token_id)
