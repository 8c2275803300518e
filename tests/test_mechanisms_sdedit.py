"""The mechanism figures as users run the method: SDEdit from an encoded image, denoise 0.6, 20 steps,
the nodes' default windows (gate 0..1, reweight 0..0.4, correction 0..0.25 of the run's own steps).
"""

from __future__ import annotations

import dataclasses

import torch
from attention_probe import add_probe
from cxr_pack.cxr_core.attention.engine import installed
from cxr_pack.cxr_core.attention.measures import attention_probs, concentration, token_map
from cxr_pack.cxr_core.attention.site_masks import mask_to_site
from cxr_pack.cxr_core.attention.sites import parse_site_spec
from cxr_pack.cxr_core.attention.tokens import find_word_tokens
from cxr_pack.nodes.energy_corrector import attach_corrector, build_corrector
from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight
from helpers import random_cond, regulated_prompt, sample

TEXT = "chest x-ray, left pleural effusion"
STEPS, DENOISE = 20, 0.6


def _prior() -> torch.Tensor:
    p = torch.zeros(1, 128, 128)
    p[:, 64:, 64:] = 1.0
    return p


def _source() -> torch.Tensor:
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5)) * 0.8


def test_reweight_concentrates_in_the_first_40_percent_of_an_sdedit_run(tiny_model, sd1_tokenizer) -> None:
    model = PathologyCrossAttnReweight.execute(
        tiny_model, regulated_prompt(sd1_tokenizer, TEXT, random_cond(1), "pleural, effusion"), _prior(), lambda_in=3.0, lambda_out=3.0,
        start_percent=0.0, end_percent=0.4, sites="all", enabled=True,
    ).result[0]  # fmt: skip
    probe = add_probe(model, "attn2", parse_site_spec("16"))
    sample(model, random_cond(1), random_cond(2), steps=STEPS, denoise=DENOISE, latent_image=_source())
    sigmas = sorted({r["sigma"] for r in probe.records}, reverse=True)
    biased = sorted({r["sigma"] for r in probe.records if r["bias"] is not None}, reverse=True)
    assert len(sigmas) == STEPS and biased == sigmas[:8], "0..0.4 of 20 steps = steps 0-7"
    cols = sorted(
        {p for v in find_word_tokens(sd1_tokenizer, TEXT, ["pleural", "effusion"]).values() for p in v}
    )
    c0, c1 = [], []
    for rec in (r for r in probe.records if r["bias"] is not None):
        cond = rec["cond_or_uncond"].index(0)
        bsz = rec["q"].shape[0] // len(rec["cond_or_uncond"])
        rows = slice(cond * bsz, (cond + 1) * bsz)
        q, k, bias = rec["q"][rows], rec["k"][rows], rec["bias"][rows]
        p_tok = mask_to_site(_prior(), rec["hw"])
        c0.append(concentration(token_map(attention_probs(q, k, rec["heads"]), cols), p_tok))
        c1.append(concentration(token_map(attention_probs(q, k, rec["heads"], bias), cols), p_tok))
    c0, c1 = torch.cat(c0), torch.cat(c1)
    print(
        f"SDEdit 0.6: concentration at 16x16 sites, steps 0-7: {float(c0.mean()):.4f} -> {float(c1.mean()):.4f}"
    )
    assert bool((c1 > c0).all())


def test_correction_lowers_the_energy_in_an_sdedit_run(inference_model, sd1_tokenizer) -> None:
    base = build_corrector(
        inference_model, regulated_prompt(sd1_tokenizer, TEXT, random_cond(1), "pleural, effusion"), _prior()
    )
    c = dataclasses.replace(base, n_iter=3, threshold=0.0, record=True)
    with torch.inference_mode():
        out = sample(
            attach_corrector(inference_model, c), random_cond(1), random_cond(2), steps=STEPS, denoise=DENOISE,
            latent_image=_source(),
        )  # fmt: skip
    assert torch.isfinite(out).all()
    assert len(c.trace) == 5, "0..0.25 of 20 steps = steps 0-4"
    first = [float(e[0]) for e in c.trace[0]["energies"]]
    print("SDEdit 0.6: energy at the first step over 3 iterations: " + " -> ".join(f"{e:.4f}" for e in first))
    for entry in c.trace:
        e = [float(x[0]) for x in entry["energies"]]
        assert e[-1] < e[0], f"energy did not decrease at sigma {entry['sigma']:.3f}: {e}"
    assert installed(inference_model, "attn2") == {}, "the shared model is left untouched"
