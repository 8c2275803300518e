"""One source of truth for the prompt: the CXR Prompt node, the sampled-prompt check, the token mapping for every
supported text encoder, and the engine contract (typed contributions, ComfyUI's attention overrides)."""

from __future__ import annotations

import pytest
import torch
from attention_probe import add_probe
from cxr_pack.cxr_core.attention.engine import install
from cxr_pack.cxr_core.attention.prompt import COND_TEXT_KEY, PromptMismatchError, RegulatedPrompt
from cxr_pack.cxr_core.attention.sites import parse_site_spec
from cxr_pack.cxr_core.attention.tokens import TokenResolutionError, encoder_family, find_word_tokens
from cxr_pack.nodes.cxr_prompt import CXRPrompt
from cxr_pack.nodes.energy_corrector import EnergyLatentCorrector
from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight
from helpers import sample

TEXT = "chest x-ray, PA view, left pleural effusion"


@pytest.fixture(scope="module")
def clip():
    from tiny_clip import build_tiny_clip

    return build_tiny_clip(seed=0)


def _prior() -> torch.Tensor:
    p = torch.zeros(1, 128, 128)
    p[:, 64:, 64:] = 1.0
    return p


def _encode(clip, text: str) -> list:
    """What core CLIPTextEncode gives for ``text``."""
    import nodes as comfy_nodes

    return comfy_nodes.CLIPTextEncode().encode(clip, text)[0]


def _reweight(model, prompt) -> object:
    return PathologyCrossAttnReweight.execute(
        model, prompt, _prior(), lambda_in=3.0, lambda_out=3.0, start_percent=0.0, end_percent=1.0, sites="16",
        enabled=True,
    ).result[0]  # fmt: skip


def test_prompt_node_encodes_like_clip_text_encode_and_marks_its_words(clip) -> None:
    conditioning, prompt = CXRPrompt.execute(clip, TEXT, "pleural, effusion", "").result
    core = _encode(clip, TEXT)
    assert torch.equal(conditioning[0][0], core[0][0]), "the sampler gets exactly CLIPTextEncode's embedding"
    assert conditioning[0][1][COND_TEXT_KEY] == TEXT
    assert isinstance(prompt, RegulatedPrompt) and prompt.encoder == "SD1 CLIP-L" and prompt.n_tokens == 77
    expected = find_word_tokens(clip, TEXT, ["pleural", "effusion"])
    assert prompt.pathology == {w: tuple(p) for w, p in expected.items()}
    assert torch.equal(prompt.encoding, core[0][0][:1])


def test_long_weighted_prompt_positions_follow_the_host_tokenizer(clip) -> None:
    text = ", ".join(["normal chest radiograph"] * 20) + ", left pleural (effusion:1.3)"
    conditioning, prompt = CXRPrompt.execute(clip, text, "effusion").result
    assert conditioning[0][0].shape[1] == prompt.n_tokens == 154
    assert all(p >= 77 for p in prompt.pathology["effusion"]), "the word sits in the second 77-token chunk"


def test_editing_only_the_sampled_prompt_stops_the_run_naming_both(tiny_model, clip) -> None:
    """The failure of the old design (prompt typed in four nodes): edit the sampler's prompt, forget the others."""
    conditioning, prompt = CXRPrompt.execute(clip, TEXT, "pleural, effusion").result
    model = _reweight(tiny_model, prompt)
    probe = add_probe(model, "attn2", parse_site_spec("16"))
    negative = _encode(clip, "")
    sample(model, conditioning, negative, steps=2)  # the node's own conditioning: runs
    assert probe.records
    probe.records.clear()
    sample(
        model, _encode(clip, TEXT), negative, steps=2
    )  # same text through core CLIPTextEncode: same encoding
    assert probe.records
    probe.records.clear()
    edited = _encode(clip, "chest x-ray, PA view, right pneumothorax")
    with pytest.raises(PromptMismatchError) as err:
        sample(model, edited, negative, steps=2)
    assert "regulates the prompt 'chest x-ray, PA view, left pleural effusion'" in str(err.value)
    assert "a conditioning not made by a CXR Prompt node (77 tokens)" in str(err.value)
    assert not probe.records, "stopped before the first step"
    other_conditioning, _ = CXRPrompt.execute(clip, "chest x-ray, right pneumothorax", "pneumothorax").result
    with pytest.raises(
        PromptMismatchError, match="conditioned on positive: the CXR Prompt 'chest x-ray, right "
    ):
        sample(model, other_conditioning, negative, steps=2)


def test_the_corrector_alone_checks_the_sampled_prompt_too(inference_model, clip) -> None:
    _, prompt = CXRPrompt.execute(clip, TEXT, "pleural, effusion").result
    model = EnergyLatentCorrector.execute(
        inference_model, prompt, _prior(), eta=30.0, iterations=1, end_percent=0.25, kappa=0.1,
        energy_threshold=0.0, sites="16", truncate=True, enabled=True,
    ).result[0]  # fmt: skip
    with pytest.raises(PromptMismatchError, match="^EnergyLatentCorrector regulates the prompt"):
        sample(model, _encode(clip, "chest x-ray, normal"), _encode(clip, ""), steps=2)


def test_every_supported_text_encoder_maps_words_and_others_are_refused_by_name(sd1_tokenizer) -> None:
    import comfy.sdxl_clip
    import comfy.text_encoders.flux
    import comfy.text_encoders.sd2_clip

    text = "chest x-ray, left pleural (effusion:1.2), " + ", ".join(["clear lungs"] * 30)
    sd1 = find_word_tokens(sd1_tokenizer, text, ["effusion", "lungs"])
    for tok, family in [
        (comfy.text_encoders.sd2_clip.SD2Tokenizer(), "SD2 OpenCLIP-H"),
        (comfy.sdxl_clip.SDXLTokenizer(), "SDXL CLIP-L + CLIP-G"),
    ]:
        assert encoder_family(tok) == family
        assert find_word_tokens(tok, text, ["effusion", "lungs"]) == sd1, family
        streams = tok.tokenize_with_weights(text)
        assert {len(chunks) for chunks in streams.values()} == {2}, "every stream has the same chunks"
    with pytest.raises(TokenResolutionError, match=r"\(l, t5xxl\) is not one whose words the pack can map"):
        encoder_family(comfy.text_encoders.flux.FluxTokenizer())


def test_an_attention_override_registered_in_transformer_options_still_runs_under_a_bias(
    tiny_model, sd1_tokenizer
) -> None:
    from helpers import random_cond, regulated_prompt

    pos, neg = random_cond(1), random_cond(2)
    seen = []

    def override(func, *args, **kwargs):  # noqa: ANN001, ANN202 - ComfyUI's optimized_attention_override
        seen.append(kwargs.get("mask") is not None)
        return func(*args, **kwargs) * 0.5

    model = _reweight(tiny_model, regulated_prompt(sd1_tokenizer, TEXT, pos))
    plain = sample(model, pos, neg, steps=2)
    model.model_options["transformer_options"]["optimized_attention_override"] = override
    overridden = sample(model, pos, neg, steps=2)
    assert any(seen), "the override ran on the biased (masked) calls"
    assert not all(seen), "and on the plain ones"
    assert not torch.allclose(plain, overridden), "and its effect reached the output"


def test_an_object_without_the_contract_is_refused_at_install(tiny_model) -> None:
    class NotAContribution:
        kind = "attn2"

        def bias(self, call):  # noqa: ANN001, ANN201
            return None

    with pytest.raises(
        TypeError, match="NotAContribution is not an attention contribution: lacks role, label"
    ):
        install(tiny_model.clone(), NotAContribution(), parse_site_spec("16"))
