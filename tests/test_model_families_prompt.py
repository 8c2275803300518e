"""The prompt-word mechanisms on SD1.5-, SD2 (v)- and SDXL-shaped UNets, with each family's real tokenizer.

Pathology reweighting raises the words' concentration inside the prior, the anatomy-word gate pulls a word
into its organ, the energy corrector lowers the concentration energy, and all leave the uncond branch and
the input model alone. Sites are the level names that mean the same on every family.
"""

from __future__ import annotations

import pytest
import torch
from attention_probe import add_probe, quadrant_masks
from cxr_pack.cxr_core.attention.engine import installed
from cxr_pack.cxr_core.attention.measures import attention_probs, concentration, token_map
from cxr_pack.cxr_core.attention.site_masks import mask_to_site
from cxr_pack.cxr_core.organ_masks import OrganMasks
from cxr_pack.cxr_core.random_models import build_tiny_model_patcher, random_family_cond
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from cxr_pack.nodes.attention_sites import model_sites
from cxr_pack.nodes.energy_corrector import attach_corrector, build_corrector
from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight
from helpers import regulated_prompt, sample

FAMILIES = ("sd15", "sd2", "sdxl")
TEXT = "chest x-ray, left pleural effusion, enlarged heart"
SIZE = 256  # 32x32 latent


def _tokenizer(family: str):  # noqa: ANN202
    """The host's own tokenizer of the family's text encoder(s) (vocabularies ship with ComfyUI)."""
    if family == "sd15":
        import comfy.sd1_clip

        return comfy.sd1_clip.SD1Tokenizer()
    if family == "sd2":
        import comfy.text_encoders.sd2_clip

        return comfy.text_encoders.sd2_clip.SD2Tokenizer()
    import comfy.sdxl_clip

    return comfy.sdxl_clip.SDXLTokenizer()


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


def _prior(size: int = SIZE) -> torch.Tensor:
    p = torch.zeros(1, size, size)
    p[:, size // 2 :, size // 2 :] = 1.0
    return p


def _cond_rows(rec: dict) -> torch.Tensor:
    n = rec["q"].shape[0] // len(rec["cond_or_uncond"])
    cond = rec["cond_or_uncond"].index(0)
    return torch.arange(cond * n, (cond + 1) * n)


def _uncond_rows(rec: dict) -> torch.Tensor:
    n = rec["q"].shape[0] // len(rec["cond_or_uncond"])
    return torch.cat(
        [torch.arange(i * n, (i + 1) * n) for i, f in enumerate(rec["cond_or_uncond"]) if f == 1]
    )


def _concentration_change(probe, cols, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c0, c1 = [], []
    for rec in probe.records:
        rows = _cond_rows(rec)
        q, k = rec["q"][rows], rec["k"][rows]
        bias = rec["bias"][rows] if rec["bias"].shape[0] > 1 else rec["bias"]
        r = mask_to_site(region, rec["hw"])
        c0.append(concentration(token_map(attention_probs(q, k, rec["heads"]), cols), r))
        c1.append(concentration(token_map(attention_probs(q, k, rec["heads"], bias), cols), r))
        assert torch.count_nonzero(rec["bias"][_uncond_rows(rec)]) == 0, "uncond branch is left alone"
    return torch.cat(c0), torch.cat(c1)


def test_reweight_raises_concentration_on_every_family(family: str) -> None:
    model = build_tiny_model_patcher(family=family)
    tok = _tokenizer(family)
    pos, neg = random_family_cond(family, 1), random_family_cond(family, 2)
    prompt = regulated_prompt(tok, TEXT, pos, "pleural, effusion")
    plain = sample(model, pos, neg, seed=3, steps=2, latent_hw=(SIZE // 8, SIZE // 8))
    before = repr(model.model_options)
    args = dict(
        lambda_in=3.0, lambda_out=3.0, start_percent=0.0, end_percent=1.0, sites="coarse", enabled=True
    )
    off = PathologyCrossAttnReweight.execute(
        model, prompt, prior=_prior(), **{**args, "enabled": False}
    ).result[0]
    assert off is model
    rw = PathologyCrossAttnReweight.execute(model, prompt, prior=_prior(), **args).result[0]
    assert set(installed(rw, "attn2")) == set(model_sites(model, "coarse"))
    probe = add_probe(rw, "attn2", model_sites(model, "coarse"))
    out = sample(rw, pos, neg, seed=3, steps=2, latent_hw=(SIZE // 8, SIZE // 8))
    assert torch.isfinite(out).all() and not torch.equal(out, plain)
    c0, c1 = _concentration_change(probe, list(prompt.pathology_positions), _prior())
    print(f"{family}: pathology-word concentration <P,p> at the coarse sites: plain {float(c0.mean()):.4f} -> "
          f"reweighted {float(c1.mean()):.4f} over {c0.numel()} cond calls")  # fmt: skip
    assert bool((c1 > c0).all())
    assert repr(model.model_options) == before
    assert torch.equal(sample(model, pos, neg, seed=3, steps=2, latent_hw=(SIZE // 8, SIZE // 8)), plain)


def test_anatomy_word_gate_pulls_the_word_into_its_organ_on_every_family(family: str) -> None:
    model = build_tiny_model_patcher(family=family)
    tok = _tokenizer(family)
    pos, neg = random_family_cond(family, 1), random_family_cond(family, 2)
    prompt = regulated_prompt(tok, TEXT, pos, pathology_words="", anatomy_words="heart=heart")
    organs = OrganMasks(names=("left_lung", "heart"), masks=quadrant_masks(128), image_size=(128, 128))
    gated = AnatomyAttentionGate.execute(
        model, organs, organs="all", strength=4.0, hard=False, tau=0.5, sites="fine, mid", start_percent=0.0,
        end_percent=1.0, background="free", enabled=True, prompt=prompt, anatomy_strength=4.0,
    ).result[0]  # fmt: skip
    probe = add_probe(gated, "attn2", model_sites(model, "fine, mid"))
    out = sample(gated, pos, neg, steps=1, latent_hw=(16, 16))
    assert torch.isfinite(out).all()
    cols = list(prompt.positions(["heart"])["heart"])
    c0, c1 = _concentration_change(probe, cols, organs.get("heart"))
    print(f"{family}: 'heart' concentration in the heart mask: plain {float(c0.mean()):.4f} -> "
          f"gated {float(c1.mean()):.4f} over {c0.numel()} cond calls")  # fmt: skip
    assert bool((c1 > c0).all())


def test_energy_corrector_lowers_the_energy_on_every_family(family: str) -> None:
    with torch.inference_mode():
        model = build_tiny_model_patcher(family=family)
    tok = _tokenizer(family)
    pos, neg = random_family_cond(family, 1), random_family_cond(family, 2)
    prompt = regulated_prompt(tok, TEXT, pos, "pleural, effusion")
    corrector = build_corrector(model, prompt, _prior(), iterations=5, energy_threshold=0.0, sites="coarse")
    import dataclasses

    corrector = dataclasses.replace(corrector, record=True)
    assert corrector.sites == model_sites(model, "coarse")
    with torch.inference_mode():
        out = sample(attach_corrector(model, corrector), pos, neg, steps=4, latent_hw=(SIZE // 8, SIZE // 8))
    assert torch.isfinite(out).all()
    assert corrector.trace, "the correction window must contain steps"
    for entry in corrector.trace:
        e = [float(x[0]) for x in entry["energies"]]
        print(f"{family}: sigma {entry['sigma']:.3f}: E = " + " -> ".join(f"{v:.5f}" for v in e))
        assert e[-1] < e[0], f"energy did not decrease: {e}"
