"""PathologyCrossAttnReweight and the anatomy-word gate on the tiny seeded UNet."""

from __future__ import annotations

import pytest
import torch
from attention_probe import add_probe, quadrant_masks
from cxr_pack.cxr_core.attention.contributions import PathologyReweight, SiteCall
from cxr_pack.cxr_core.attention.engine import RegulatedAttention, installed
from cxr_pack.cxr_core.attention.measures import attention_probs, concentration, token_map
from cxr_pack.cxr_core.attention.prompt import PromptMismatchError, context_columns
from cxr_pack.cxr_core.attention.site_masks import mask_to_site
from cxr_pack.cxr_core.attention.sites import parse_site_spec
from cxr_pack.cxr_core.attention.tokens import find_word_tokens, tokenize_prompt
from cxr_pack.cxr_core.organ_masks import OrganMasks
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight
from helpers import random_cond, regulated_prompt, sample

TEXT = "chest x-ray, left pleural effusion, normal heart"
SIZE = 256  # 32x32 latent: the "16x16" sites are 8x8 here


def _prior(size: int = SIZE) -> torch.Tensor:
    p = torch.zeros(1, size, size)
    p[:, size // 2 :, size // 2 :] = 1.0  # lower image-right quadrant = patient's left base
    return p


def _reweight(
    model, tok, text: str = TEXT, prior: torch.Tensor | None = None, positive: list | None = None,
    pathology_words: str = "pleural, effusion", **kw,
):  # fmt: skip
    """The reweighted model for a prompt whose encoding is ``positive`` (default random_cond(1), with the text's
    chunk count)."""
    n_chunks = tokenize_prompt(tok, text).length // 77
    positive = random_cond(1, chunks=n_chunks) if positive is None else positive
    prompt = regulated_prompt(tok, text, positive, pathology_words)
    args = dict(lambda_in=3.0, lambda_out=3.0, start_percent=0.0, end_percent=1.0, sites="all", enabled=True)
    args.update(kw)
    return PathologyCrossAttnReweight.execute(
        model, prompt, prior=_prior() if prior is None else prior, **args
    ).result[0]


def _concentrations(probe, columns: list[int], prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c0, c1 = [], []
    for rec in probe.records:
        cond = [i for i, f in enumerate(rec["cond_or_uncond"]) if f == 0]
        bsz = rec["q"].shape[0] // len(rec["cond_or_uncond"])
        rows = torch.cat([torch.arange(i * bsz, (i + 1) * bsz) for i in cond])
        q, k = rec["q"][rows], rec["k"][rows]
        bias = rec["bias"][rows] if rec["bias"].shape[0] > 1 else rec["bias"]
        p_tok = mask_to_site(prior, rec["hw"])
        c0.append(concentration(token_map(attention_probs(q, k, rec["heads"]), columns), p_tok))
        c1.append(concentration(token_map(attention_probs(q, k, rec["heads"], bias), columns), p_tok))
    return torch.cat(c0), torch.cat(c1)


def test_reweight_raises_concentration_and_leaves_other_tokens_alone(tiny_model, sd1_tokenizer) -> None:
    model = _reweight(tiny_model, sd1_tokenizer)
    probe = add_probe(model, "attn2", parse_site_spec("16"))
    sample(model, random_cond(1), random_cond(2), steps=2, latent_hw=(SIZE // 8, SIZE // 8))
    cols = sorted(
        {p for v in find_word_tokens(sd1_tokenizer, TEXT, ["pleural", "effusion"]).values() for p in v}
    )
    c0, c1 = _concentrations(probe, cols, _prior())
    print(
        f"concentration <P,p> at 16x16 sites: plain {float(c0.mean()):.4f} -> reweighted {float(c1.mean()):.4f}"
    )
    assert bool((c1 > c0).all()), (
        "every cond call must concentrate the pathology tokens more inside the prior"
    )
    others = [i for i in range(77) if i not in cols]
    for rec in probe.records:
        bias = rec["bias"]
        assert torch.count_nonzero(bias[..., others]) == 0, "only pathology-token logits are biased"
        uncond = [i for i, f in enumerate(rec["cond_or_uncond"]) if f == 1]
        for i in uncond:
            assert torch.count_nonzero(bias[i]) == 0, "uncond branch is left alone"
        p0 = attention_probs(rec["q"], rec["k"], rec["heads"])[..., others]
        p1 = attention_probs(rec["q"], rec["k"], rec["heads"], bias)[..., others]
        # other tokens keep their relative weights: the softmax only renormalises them
        assert torch.allclose(p0 / p0.sum(-1, keepdim=True), p1 / p1.sum(-1, keepdim=True), atol=1e-5)


def test_reweight_window_and_identity(tiny_model, sd1_tokenizer) -> None:
    pos, neg = random_cond(1), random_cond(2)
    plain = sample(tiny_model, pos, neg, seed=3, steps=4)
    off = _reweight(tiny_model, sd1_tokenizer, enabled=False)
    assert torch.equal(sample(off, pos, neg, seed=3, steps=4), plain)
    early = _reweight(tiny_model, sd1_tokenizer, end_percent=0.4)
    probe = add_probe(early, "attn2", parse_site_spec("16"))
    out = sample(early, pos, neg, seed=3, steps=4)
    assert not torch.equal(out, plain)
    biased = sorted({r["sigma"] for r in probe.records if r["bias"] is not None}, reverse=True)
    unbiased = sorted({r["sigma"] for r in probe.records if r["bias"] is None}, reverse=True)
    # 4 steps have progress 0, 1/3, 2/3, 1: a 0..0.4 window holds the first two of this run
    assert len(biased) == 2 and len(unbiased) == 2
    assert min(biased) > max(unbiased)


def test_two_chunk_prompt_with_words_in_the_second_chunk(tiny_model, sd1_tokenizer) -> None:
    text = ", ".join(["normal chest radiograph"] * 20) + ", left pleural effusion"
    model = _reweight(tiny_model, sd1_tokenizer, text=text)
    probe = add_probe(model, "attn2", parse_site_spec("16"))
    # positive has 2 chunks (154 tokens), negative 1: ComfyUI repeats the negative to 154
    sample(model, random_cond(1, chunks=2), random_cond(2), steps=1, latent_hw=(SIZE // 8, SIZE // 8))
    cols = sorted(
        {p for v in find_word_tokens(sd1_tokenizer, text, ["pleural", "effusion"]).values() for p in v}
    )
    assert min(cols) >= 77
    c0, c1 = _concentrations(probe, cols, _prior())
    assert bool((c1 > c0).all())


def test_sampling_another_prompt_stops_before_the_first_step_naming_both(tiny_model, sd1_tokenizer) -> None:
    text = ", ".join(["normal chest radiograph"] * 40) + ", left pleural effusion"  # 3 chunks
    model = _reweight(tiny_model, sd1_tokenizer, text=text)
    probe = add_probe(model, "attn2", parse_site_spec("16"))
    with pytest.raises(PromptMismatchError, match=r"regulates the prompt 'normal chest.*\(231 tokens.*conditioned on "
                       r"positive: a conditioning not made by a CXR Prompt node \(154 tokens\)"):  # fmt: skip
        sample(model, random_cond(1, chunks=2), random_cond(2), steps=1)
    same_length = _reweight(tiny_model, sd1_tokenizer)  # encoding random_cond(1); sampled: random_cond(5)
    with pytest.raises(PromptMismatchError, match="regulated words would not be the sampled words"):
        sample(same_length, random_cond(5), random_cond(2), steps=1)
    assert not probe.records, "nothing ran: the check comes before the first step"


def test_token_columns_are_validated_in_one_place() -> None:
    cols = context_columns((3, 4), 77, 154, "cpu", "X")
    assert cols.tolist() == [3, 4, 80, 81]  # a 77-token prompt repeated to a 154-key context
    with pytest.raises(PromptMismatchError, match="X: the regulated prompt has 154 tokens .* has 231"):
        context_columns((3,), 154, 231, "cpu", "X")  # 231 is no whole multiple of 154: never rounded down
    with pytest.raises(ValueError, match="outside the prompt's 77 tokens"):
        context_columns((80,), 77, 77, "cpu", "X")


def test_bad_inputs_are_named(tiny_model, sd1_tokenizer) -> None:
    with pytest.raises(ValueError, match="prior is empty"):
        _reweight(tiny_model, sd1_tokenizer, prior=torch.zeros(1, 64, 64))
    with pytest.raises(
        ValueError, match="'pneumothorax' is not in the prompt; the prompt's words are: chest"
    ):
        _reweight(tiny_model, sd1_tokenizer, pathology_words="pneumothorax")
    with pytest.raises(ValueError, match="start <= end"):
        _reweight(tiny_model, sd1_tokenizer, start_percent=0.5, end_percent=0.2)


def test_composes_with_an_earlier_attn2_replace(tiny_model, sd1_tokenizer) -> None:
    import comfy.ldm.modules.attention as attention

    calls = []

    def foreign(q, k, v, extra_options):  # e.g. an IPAdapter-style replace: plain attention plus a term
        calls.append(extra_options["block"])
        return attention.optimized_attention(q, k, v, extra_options["n_heads"]) + 0.05 * q

    other = tiny_model.clone()
    for site in parse_site_spec("16"):
        other.set_model_attn2_replace(foreign, site[0], site[1])
    pos, neg = random_cond(1), random_cond(2)
    only_foreign = sample(other, pos, neg, seed=2, steps=2)
    only_ours = sample(_reweight(tiny_model, sd1_tokenizer), pos, neg, seed=2, steps=2)
    both = _reweight(other, sd1_tokenizer)
    wrapped = [p for s, p in installed(both, "attn2").items() if s in parse_site_spec("16")]
    assert wrapped and all(p.inner is foreign for p in wrapped)
    calls.clear()
    combined = sample(both, pos, neg, seed=2, steps=2)
    assert len(calls) == 2 * 5, "the earlier replace still runs at each of its sites and steps"
    assert not torch.allclose(combined, only_ours, atol=1e-4), "its effect is still present"
    assert not torch.allclose(combined, only_foreign, atol=1e-4), "and so is ours"


def test_composition_formula_at_one_site() -> None:
    import comfy.ldm.modules.attention as attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 16, 32, generator=g),
        torch.randn(2, 77, 32, generator=g),
        torch.randn(2, 77, 32, generator=g),
    )

    def foreign(q, k, v, eo):
        return attention.optimized_attention(q, k, v, eo["n_heads"]) + 0.1

    c = PathologyReweight(prior=torch.ones(1, 32, 32), positions=(3, 4), prompt_len=77)
    eo = {
        "n_heads": 4,
        "cond_or_uncond": [0, 1],
        "activations_shape": [2, 32, 4, 4],
        "sigmas": torch.tensor([1.0]),
    }
    out = RegulatedAttention(("input", 1), "attn2", (c,), inner=foreign)(q, k, v, eo)
    call = SiteCall(("input", 1), "attn2", (4, 4), 16, 77, 1, torch.device("cpu"))
    bias = torch.cat([c.bias(call), torch.zeros(1, 16, 77)]).unsqueeze(1)
    expected = (
        foreign(q, k, v, eo)
        + attention.optimized_attention(q, k, v, 4, mask=bias)
        - attention.optimized_attention(q, k, v, 4)
    )
    assert torch.allclose(out, expected, atol=1e-6)


def test_anatomy_word_gate_confines_the_word_to_its_organ(tiny_model, sd1_tokenizer) -> None:
    text = "chest x-ray, enlarged heart, clear lungs"
    organs = OrganMasks(names=("left_lung", "heart"), masks=quadrant_masks(128), image_size=(128, 128))
    pos = random_cond(1)
    prompt = regulated_prompt(sd1_tokenizer, text, pos, pathology_words="", anatomy_words="heart=heart")
    model = AnatomyAttentionGate.execute(
        tiny_model, organs, organs="all", strength=4.0, hard=False, tau=0.5, sites="64,32", start_percent=0.0,
        end_percent=1.0, background="free", enabled=True, prompt=prompt, anatomy_strength=4.0,
    ).result[0]  # fmt: skip
    probe = add_probe(model, "attn2", parse_site_spec("64"))
    sample(model, pos, random_cond(2), steps=1, latent_hw=(16, 16))
    cols = find_word_tokens(sd1_tokenizer, text, ["heart"])["heart"]
    heart = organs.get("heart")
    for rec in probe.records:
        r = mask_to_site(heart, rec["hw"])
        c0 = concentration(token_map(attention_probs(rec["q"], rec["k"], rec["heads"]), cols), r)
        c1 = concentration(token_map(attention_probs(rec["q"], rec["k"], rec["heads"], rec["bias"]), cols), r)
        n = rec["q"].shape[0] // 2
        cond = rec["cond_or_uncond"].index(0)
        assert float(c1[cond * n]) > float(c0[cond * n])
        assert torch.count_nonzero(rec["bias"][(1 - cond) * n]) == 0  # uncond untouched
    with pytest.raises(ValueError, match="AnatomyAttentionGate: prompt must come from a CXR Prompt node"):
        AnatomyAttentionGate.execute(
            tiny_model, organs, organs="all", strength=4.0, hard=False, tau=0.5, sites="64,32", start_percent=0.0,
            end_percent=1.0, background="free", enabled=True, prompt="chest x-ray, enlarged heart",
        )  # fmt: skip
