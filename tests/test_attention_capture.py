"""AttentionMapCapture / AttentionMapRender on the tiny seeded UNet."""

from __future__ import annotations

import pytest
import torch
from cxr_pack.cxr_core.attention.engine import installed
from cxr_pack.nodes.attention_capture import AttentionMapCapture, AttentionMapRender
from helpers import random_cond, regulated_prompt, sample

TEXT = "chest x-ray, left pleural effusion"


def _capture(model, tok, **kw):
    args = dict(words="pleural, effusion", sites="16", steps="all", enabled=True)
    args.update(kw)
    return AttentionMapCapture.execute(model, regulated_prompt(tok, TEXT, random_cond(1)), **args).result


def test_capture_records_per_word_and_step_and_renders(tiny_model, sd1_tokenizer) -> None:
    model, store = _capture(tiny_model, sd1_tokenizer)
    assert store.maps() == {}
    sample(model, random_cond(1), random_cond(2), steps=3, latent_hw=(32, 32))
    maps = store.maps()
    assert set(maps) == {"pleural", "effusion"}
    assert sorted(maps["effusion"]) == [0, 1, 2]
    m = maps["effusion"][0]
    assert m.shape == (1, 8, 8) and m.device.type == "cpu"
    assert 0 < float(m.sum()) <= 64 + 1e-4  # a probability mass per query, summed over the word's tokens
    image = torch.rand(1, 3, 256, 256).movedim(1, -1)  # non-contiguous, as VAE decodes return
    (heat,) = AttentionMapRender.execute(store, image, steps="mean", alpha=0.5).result
    assert heat.shape[0] == 2 and heat.shape[1] == 256 and heat.shape[2] > 256 and heat.shape[3] == 3
    assert float(heat.min()) >= 0 and float(heat.max()) <= 1
    (each,) = AttentionMapRender.execute(store, image, steps="each", alpha=0.5).result
    assert each.shape[0] == 2 * 3
    with pytest.raises(ValueError, match=r"steps \[7\] were not recorded"):
        AttentionMapRender.execute(store, image, steps="7", alpha=0.5)


def test_capture_chosen_steps_and_latest_run_only(tiny_model, sd1_tokenizer) -> None:
    model, store = _capture(tiny_model, sd1_tokenizer, steps="1")
    sample(model, random_cond(1), random_cond(2), steps=3, latent_hw=(16, 16))
    first = store.maps()["effusion"][1].clone()
    assert list(store.maps()["effusion"]) == [1]
    sample(model, random_cond(1), random_cond(2), steps=3, latent_hw=(16, 16), seed=5)
    assert not torch.equal(store.maps()["effusion"][1], first), "the store holds the latest run only"


def test_capture_changes_nothing_and_disabled_costs_nothing(tiny_model, sd1_tokenizer) -> None:
    pos, neg = random_cond(1), random_cond(2)
    plain = sample(tiny_model, pos, neg, seed=1, steps=3)
    model, _ = _capture(tiny_model, sd1_tokenizer)
    assert torch.equal(sample(model, pos, neg, seed=1, steps=3), plain), (
        "recording must not change the result"
    )
    off, store = _capture(tiny_model, sd1_tokenizer, enabled=False)
    assert off is tiny_model and not installed(off, "attn2")
    with pytest.raises(ValueError, match="no attention maps were recorded"):
        AttentionMapRender.execute(store, torch.rand(1, 64, 64, 3), steps="mean", alpha=0.5)
