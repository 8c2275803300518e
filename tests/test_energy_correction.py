"""EnergyLatentCorrector on the tiny seeded UNet, built and sampled under inference mode like ComfyUI."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from cxr_pack.cxr_core.attention.correction import LatentCorrector
from cxr_pack.cxr_core.attention.site_scheme import scheme_of
from cxr_pack.nodes.energy_corrector import attach_corrector, build_corrector
from helpers import random_cond, regulated_prompt, sample

TEXT = "chest x-ray, left pleural effusion"
LATENT = (32, 32)


def _prior(batch: int = 1, flip: bool = False) -> torch.Tensor:
    p = torch.zeros(batch, 256, 256)
    p[:, 128:, 128:] = 1.0
    if flip:
        p[1:] = p[1:].flip(-1)
    return p


def _corrector(model, tok, **kw) -> LatentCorrector:
    base = build_corrector(
        model,
        regulated_prompt(tok, TEXT, random_cond(1), "pleural, effusion"),
        _prior(kw.pop("batch", 1), kw.pop("flip", False)),
    )
    return dataclasses.replace(base, **kw)


def _run(model, **kw) -> torch.Tensor:
    with torch.inference_mode():
        return sample(model, random_cond(1), random_cond(2), latent_hw=LATENT, **kw)


def test_energy_decreases_over_iterations(inference_model, sd1_tokenizer) -> None:
    c = _corrector(inference_model, sd1_tokenizer, n_iter=5, threshold=0.0, record=True, eta=30.0, kappa=0.1)
    out = _run(attach_corrector(inference_model, c), steps=4)
    assert torch.isfinite(out).all()
    assert c.trace, "the correction window must contain steps"
    for entry in c.trace:
        e = [float(x[0]) for x in entry["energies"]]
        print(f"sigma {entry['sigma']:.3f}: E = " + " -> ".join(f"{v:.5f}" for v in e))
        assert e[-1] < e[0], f"energy did not decrease: {e}"
        assert all(b <= a + 1e-6 for a, b in zip(e[:-1], e[1:], strict=True)), (
            f"energy rose during the iterations: {e}"
        )


def test_euler_trajectory_equals_explicit_reference_loop(inference_model, sd1_tokenizer) -> None:
    import comfy.sample
    import comfy.samplers

    c = _corrector(inference_model, sd1_tokenizer, n_iter=2, threshold=0.0)
    corrected = _run(attach_corrector(inference_model, c), steps=6, sampler_name="euler")

    def reference(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        guider = model_k.inner_model
        k = c.n_window_steps(sigmas)
        for i in range(len(sigmas) - 1):
            if i < k:
                x, _ = c.correct(
                    guider, x, float(sigmas[i]), extra_args["model_options"]
                )  # update the latent ...
            denoised = model_k(x, sigmas[i] * x.new_ones([x.shape[0]]), **extra_args)  # ... then step
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        return x

    with torch.inference_mode():
        latent = torch.zeros(1, 4, *LATENT)
        sigmas = comfy.samplers.calculate_sigmas(
            inference_model.get_model_object("model_sampling"), "normal", 6
        )
        ref = comfy.sample.sample_custom(
            inference_model, comfy.sample.prepare_noise(latent, 0), 5.0, comfy.samplers.KSAMPLER(reference), sigmas,
            random_cond(1), random_cond(2), latent, disable_pbar=True, seed=0,
        )  # fmt: skip
    plain = _run(inference_model, steps=6, sampler_name="euler")
    assert not torch.equal(corrected, plain)
    assert torch.allclose(corrected, ref, atol=1e-5), float((corrected - ref).abs().max())


def test_disabled_is_bit_identical_and_nothing_leaks(inference_model, sd1_tokenizer) -> None:
    from cxr_pack.nodes.energy_corrector import EnergyLatentCorrector

    plain_before = _run(inference_model, steps=4)
    off = EnergyLatentCorrector.execute(
        inference_model, regulated_prompt(sd1_tokenizer, TEXT, random_cond(1), "pleural, effusion"), _prior(), eta=30.0, iterations=1, end_percent=0.25,
        kappa=0.1, energy_threshold=0.2, sites="16", truncate=True, enabled=False,
    ).result[0]  # fmt: skip
    assert off is inference_model
    assert torch.equal(_run(off, steps=4), plain_before)

    unet = inference_model.model.diffusion_model
    params_before = {k: v for k, v in unet.named_parameters()}
    options_before = repr(inference_model.model_options)
    functions_before = _weight_functions(unet)
    on = attach_corrector(inference_model, _corrector(inference_model, sd1_tokenizer, threshold=0.0))
    assert not torch.equal(_run(on, steps=4), plain_before)
    assert torch.equal(_run(inference_model, steps=4), plain_before), (
        "a plain run after a corrected one must not change"
    )
    assert repr(inference_model.model_options) == options_before
    assert all(v is params_before[k] for k, v in unet.named_parameters()), "parameters were re-created"
    assert _weight_functions(unet) == functions_before, "weight functions were left on the model"
    assert sum(len(w) + len(b) for w, b in functions_before.values()) == 0


def _weight_functions(unet: torch.nn.Module) -> dict:
    return {
        n: (tuple(getattr(m, "weight_function", ())), tuple(getattr(m, "bias_function", ())))
        for n, m in unet.named_modules()
        if hasattr(m, "weight_function")
    }


@pytest.mark.parametrize("sampler_name", ["euler", "euler_ancestral", "dpmpp_2m", "ddim", "uni_pc"])
def test_samplers_ksampler_and_custom_paths(inference_model, sd1_tokenizer, sampler_name: str) -> None:
    import comfy.sample
    import comfy.samplers

    c = _corrector(inference_model, sd1_tokenizer, threshold=0.0, record=True)
    model = attach_corrector(inference_model, c)
    out = _run(model, steps=8, sampler_name=sampler_name)
    plain = _run(inference_model, steps=8, sampler_name=sampler_name)
    assert torch.isfinite(out).all() and not torch.equal(out, plain)
    schedule = comfy.samplers.KSampler(inference_model, 8, "cpu", sampler_name, "normal").sigmas
    assert len(c.trace) == c.n_window_steps(schedule) >= 2, "the steps in the first 25% are corrected"
    c.trace.clear()
    with torch.inference_mode():  # SamplerCustom path: a SAMPLER object and explicit sigmas
        latent = torch.zeros(1, 4, *LATENT)
        sigmas = comfy.samplers.calculate_sigmas(
            inference_model.get_model_object("model_sampling"), "karras", 8
        )
        sampler = comfy.samplers.sampler_object(sampler_name)
        fn_before = sampler.sampler_function
        custom = comfy.sample.sample_custom(
            model, comfy.sample.prepare_noise(latent, 0), 5.0, sampler, sigmas, random_cond(1), random_cond(2),
            latent, disable_pbar=True, seed=0,
        )  # fmt: skip
    assert torch.isfinite(custom).all() and len(c.trace) >= 1
    assert sampler.sampler_function is fn_before, "the shared SAMPLER object is restored"


def test_ksampler_advanced_start_step(inference_model, sd1_tokenizer) -> None:
    c = _corrector(inference_model, sd1_tokenizer, threshold=0.0, record=True)
    import comfy.sample

    with torch.inference_mode():
        latent = torch.zeros(1, 4, *LATENT)
        out = comfy.sample.sample(
            attach_corrector(inference_model, c), comfy.sample.prepare_noise(latent, 0), 8, 5.0, "euler", "normal",
            random_cond(1), random_cond(2), latent, start_step=1, last_step=8, disable_pbar=True, seed=0,
        )  # fmt: skip
    assert torch.isfinite(out).all()
    import comfy.samplers

    full = comfy.samplers.calculate_sigmas(inference_model.get_model_object("model_sampling"), "normal", 8)
    # the call takes steps 1..7 of 8 (7 steps): the window 0..0.25 is its own first two (progress 0 and 1/6)
    assert [t["sigma"] for t in c.trace] == pytest.approx([float(full[1]), float(full[2])], rel=1e-5)


def test_batch_two_different_priors_and_cfg_one(inference_model, sd1_tokenizer) -> None:
    c = _corrector(inference_model, sd1_tokenizer, batch=2, flip=True, threshold=0.0, record=True)
    for cfg in (5.0, 1.0):
        c.trace.clear()
        out = _run(attach_corrector(inference_model, c), steps=4, batch=2, cfg=cfg)
        assert out.shape[0] == 2 and torch.isfinite(out).all()
        e0 = c.trace[0]["energies"][0]
        assert e0.shape == (2,)
    with pytest.raises(ValueError, match="2 mask sets for a batch of 3"):
        _run(attach_corrector(inference_model, c), steps=4, batch=3)


def test_nan_gradient_is_a_logged_skip(inference_model, sd1_tokenizer, caplog) -> None:
    class Broken(LatentCorrector):
        def energy_and_grad(self, guider, x, sigma, model_options, aliases=None):
            e, g = super().energy_and_grad(guider, x, sigma, model_options, aliases)
            g = g.clone()
            g[1] = float("nan")
            return e, g

    c = _corrector(inference_model, sd1_tokenizer, batch=2, threshold=0.0)
    broken = Broken(**{f.name: getattr(c, f.name) for f in dataclasses.fields(c)})
    plain = _run(inference_model, steps=4, batch=2)
    with caplog.at_level(logging.WARNING, logger="cxr_counterfactual.correction"):
        out = _run(attach_corrector(inference_model, broken), steps=4, batch=2)
    assert torch.isfinite(out).all()
    assert "non-finite gradient" in caplog.text
    assert torch.allclose(out[1], plain[1], atol=1e-5), "the broken item is left uncorrected"
    assert not torch.allclose(out[0], plain[0], atol=1e-4), "the healthy item is still corrected"


def test_empty_prior_is_a_clear_error(inference_model, sd1_tokenizer) -> None:
    with pytest.raises(ValueError, match="prior is empty"):
        build_corrector(
            inference_model,
            regulated_prompt(sd1_tokenizer, TEXT, random_cond(1), "effusion"),
            torch.zeros(1, 64, 64),
        )


def test_composes_with_gate_and_reweight_in_either_order(inference_model, sd1_tokenizer) -> None:
    from cxr_pack.cxr_core.organ_masks import OrganMasks
    from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
    from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight

    organs = OrganMasks(
        ("left_lung", "right_lung"), torch.stack([_prior()[0], _prior()[0].flip(-1)]), (256, 256)
    )

    def gate(m):
        return AnatomyAttentionGate.execute(
            m, organs, organs="all", strength=4.0, hard=False, tau=0.5, sites="64,32", start_percent=0.0,
            end_percent=1.0, background="free", enabled=True,
        ).result[0]  # fmt: skip

    def reweight(m):
        return PathologyCrossAttnReweight.execute(
            m, regulated_prompt(sd1_tokenizer, TEXT, random_cond(1), "pleural, effusion"), _prior(), lambda_in=3.0, lambda_out=3.0, start_percent=0.0,
            end_percent=0.4, sites="all", enabled=True,
        ).result[0]  # fmt: skip

    def correct(m):
        return attach_corrector(m, _corrector(m, sd1_tokenizer, threshold=0.0))

    with torch.inference_mode():
        a = correct(reweight(gate(inference_model)))
        b = gate(reweight(correct(inference_model)))
    out_a, out_b = _run(a, steps=4), _run(b, steps=4)
    assert torch.isfinite(out_a).all()
    assert torch.allclose(out_a, out_b, atol=1e-5)
    assert not torch.allclose(out_a, _run(correct(inference_model), steps=4), atol=1e-4)


@pytest.mark.parametrize("truncate", [True, False])
def test_truncated_gradient_pass_never_runs_the_decoder_blocks_above_the_energy_sites(
    inference_model, sd1_tokenizer, truncate: bool
) -> None:
    c = _corrector(inference_model, sd1_tokenizer, threshold=0.0, truncate=truncate, record=True)
    stop = c.truncation(scheme_of(inference_model.model))
    if truncate:  # after output block 5's one transformer block, the last 16x16 site
        assert (stop.site, stop.last_index) == (("output", 5), 0)
    else:
        assert stop is None
    unet = inference_model.model.diffusion_model
    calls = {"output6": 0, "grad_passes": 0}
    block = unet.output_blocks[6][0]  # its ResBlock: the first layer of decoder block 6
    original_forward = block.forward

    def counting_forward(*args, **kwargs):
        if torch.is_grad_enabled():
            calls["output6"] += 1
        return original_forward(*args, **kwargs)

    block.forward = counting_forward
    try:
        _run(attach_corrector(inference_model, c), steps=4, cfg=1.0)
    finally:
        del block.forward
    passes = 2 * len(c.trace)  # one pass per iteration plus the recorded final energy
    assert passes > 0
    assert calls["output6"] == (0 if truncate else passes)


def test_gradient_pass_aliases_weights_without_copies_and_matches_copied_weights(
    inference_model, sd1_tokenizer
) -> None:
    """The memory-saving path (weights aliased, never copied) gives the energy and gradient of copied weights."""
    import comfy.sample
    import comfy.samplers
    from cxr_pack.cxr_core.attention.autograd import autograd_compatible_weights

    unet = inference_model.model.diffusion_model
    originals = {n: p for n, p in unet.named_parameters()}
    assert all(p.is_inference() for p in originals.values())
    with autograd_compatible_weights(unet) as n:
        assert n == len(originals)
        for name, p in unet.named_parameters():
            assert not p.is_inference() and p.data_ptr() == originals[name].data_ptr(), f"{name} was copied"
    assert all(p is originals[k] for k, p in unet.named_parameters())

    c = _corrector(inference_model, sd1_tokenizer)
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def both_ways(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        guider, mo, sigma = model_k.inner_model, extra_args["model_options"], float(sigmas[0])
        seen["alias"] = c.energy_and_grad(guider, x, sigma, mo)
        swapped = [(m, k, p) for m in unet.modules() for k, p in m._parameters.items() if p is not None]
        try:
            with torch.inference_mode(False):
                for m, k, p in swapped:  # the copying reference: ordinary clones of every weight
                    m._parameters[k] = torch.nn.Parameter(p.clone(), requires_grad=False)
            seen["copy"] = c.energy_and_grad(guider, x, sigma, mo)
        finally:
            for m, k, p in swapped:
                m._parameters[k] = p
        return x

    with torch.inference_mode():
        latent = torch.zeros(1, 4, *LATENT)
        sigmas = comfy.samplers.calculate_sigmas(
            inference_model.get_model_object("model_sampling"), "normal", 4
        )
        comfy.sample.sample_custom(
            inference_model, comfy.sample.prepare_noise(latent, 0), 5.0, comfy.samplers.KSAMPLER(both_ways), sigmas,
            random_cond(1), random_cond(2), latent, disable_pbar=True, seed=0,
        )  # fmt: skip
    (e1, g1), (e2, g2) = seen["alias"], seen["copy"]
    assert torch.allclose(e1, e2, rtol=1e-5) and torch.allclose(g1, g2, rtol=1e-4, atol=1e-7)
    assert float(g1.abs().max()) > 0


def test_gradient_passes_of_one_run_reuse_weight_aliases_and_each_run_starts_afresh(
    inference_model, sd1_tokenizer, monkeypatch
) -> None:
    """One alias per weight per sampling call (not per pass); a moved weight gets a new one; nothing outlives the run."""
    from cxr_pack.cxr_core.attention import correction
    from cxr_pack.cxr_core.attention.autograd import autograd_compatible_weights

    unet = inference_model.model.diffusion_model
    cache: dict = {}
    with autograd_compatible_weights(unet, cache):
        first = {n: p for n, p in unet.named_parameters()}
    with autograd_compatible_weights(unet, cache):
        assert all(p is first[n] for n, p in unet.named_parameters()), "a second pass must reuse the aliases"
    name, weight = next(iter(unet.named_parameters()))
    moved = torch.nn.Parameter(weight.clone(), requires_grad=False)  # as if ComfyUI had re-cast this weight
    module = unet.get_submodule(name.rsplit(".", 1)[0]) if "." in name else unet
    module._parameters[name.rsplit(".", 1)[-1]] = moved
    try:
        with autograd_compatible_weights(unet, cache):
            alias = dict(unet.named_parameters())[name]
            assert alias is not first[name] and alias.data_ptr() == moved.data_ptr()
    finally:
        module._parameters[name.rsplit(".", 1)[-1]] = weight

    caches: list = []  # the cache objects themselves (held, so no id is reused)
    orig = correction.autograd_compatible_weights
    monkeypatch.setattr(
        correction, "autograd_compatible_weights", lambda m, c=None: caches.append(c) or orig(m, c)
    )
    c = _corrector(inference_model, sd1_tokenizer)
    _run(attach_corrector(inference_model, c), steps=8, cfg=1.0)  # window 0..0.25 of 8 steps: steps 0-1
    first_run = list(caches)
    _run(attach_corrector(inference_model, c), steps=8, cfg=1.0)
    second_run = caches[len(first_run) :]
    assert len(first_run) >= 2 and len(second_run) == len(first_run)
    assert all(x is first_run[0] for x in first_run) and isinstance(first_run[0], dict), "one cache per call"
    assert all(x is second_run[0] for x in second_run) and second_run[0] is not first_run[0], (
        "a fresh one per call"
    )
