"""Word-to-token resolution with the host's real SD1 CLIP tokenizer."""

from __future__ import annotations

import pytest
from cxr_pack.cxr_core.attention.tokens import (
    TokenResolutionError,
    find_word_tokens,
    parse_word_bindings,
    tokenize_prompt,
    word_token_ids,
)


def test_multi_token_word_and_weights(sd1_tokenizer) -> None:
    seq = word_token_ids(sd1_tokenizer, "cardiomegaly")
    assert len(seq) >= 2, "cardiomegaly should split into several BPE tokens"
    text = "chest x-ray, (cardiomegaly:1.3), normal lungs"
    prompt = tokenize_prompt(sd1_tokenizer, text)
    pos = find_word_tokens(sd1_tokenizer, text, ["cardiomegaly"])["cardiomegaly"]
    assert len(pos) == len(seq)
    assert tuple(prompt.ids[p] for p in pos) == seq
    assert pos == list(range(pos[0], pos[0] + len(seq)))


def test_repeated_words_all_found(sd1_tokenizer) -> None:
    pos = find_word_tokens(sd1_tokenizer, "effusion left, small effusion", ["effusion"])["effusion"]
    seq = word_token_ids(sd1_tokenizer, "effusion")
    assert len(pos) == 2 * len(seq)


def test_long_prompt_second_chunk(sd1_tokenizer) -> None:
    filler = ", ".join(["normal chest radiograph"] * 20)
    text = f"{filler}, left pleural effusion"
    prompt = tokenize_prompt(sd1_tokenizer, text)
    assert prompt.length == 154 and prompt.chunk_len == 77
    pos = find_word_tokens(sd1_tokenizer, text, ["effusion"])["effusion"]
    assert all(p >= 77 for p in pos)
    assert prompt.ids[pos[0]] == word_token_ids(sd1_tokenizer, "effusion")[0]


def test_absent_word_lists_prompt_words(sd1_tokenizer) -> None:
    with pytest.raises(
        TokenResolutionError, match="'pneumothorax' is not in the prompt.*left, pleural, effusion"
    ):
        find_word_tokens(sd1_tokenizer, "left pleural effusion", ["pneumothorax"])


def test_phrase_and_bindings(sd1_tokenizer) -> None:
    pos = find_word_tokens(sd1_tokenizer, "a large pleural effusion", ["pleural effusion"])[
        "pleural effusion"
    ]
    assert len(pos) == len(word_token_ids(sd1_tokenizer, "pleural")) + len(
        word_token_ids(sd1_tokenizer, "effusion")
    )
    assert parse_word_bindings("heart=heart, lungs=left_lung+right_lung") == [
        ("heart", "heart"),
        ("lungs", "left_lung+right_lung"),
    ]
    with pytest.raises(TokenResolutionError, match="expected word=organ"):
        parse_word_bindings("heart")
