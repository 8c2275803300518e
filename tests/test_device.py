"""The device subset (marker ``gpu``): the method in half precision on ComfyUI's compute device.

scripts/device_check.sh runs these with CXR_TEST_DEVICE=cuda, so the tiny seeded UNet sits on the GPU
in fp16 and bf16 and ComfyUI's own CUDA attention path runs. In CI (no GPU) the same tests run on the
CPU in the same dtypes; there the weight-offloading test compares two identical load paths, which is
stated, not hidden: offloading exists only for a GPU load device.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from attention_probe import add_probe
from cxr_pack.cxr_core.attention.engine import installed
from cxr_pack.cxr_core.attention.measures import attention_probs, per_query_cross_mass
from cxr_pack.cxr_core.attention.sites import parse_site_spec
from cxr_pack.cxr_core.organ_masks import OrganMasks
from cxr_pack.cxr_core.random_models import build_sd15_base_model
from cxr_pack.cxr_runner.activity import activity_records
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from cxr_pack.nodes.attention_capture import AttentionMapCapture
from cxr_pack.nodes.energy_corrector import EnergyLatentCorrector, attach_corrector, build_corrector
from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight
from helpers import random_cond, regulated_prompt, sample

pytestmark = pytest.mark.gpu
TEXT = "chest x-ray, left pleural effusion"
DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]


@pytest.fixture(params=DTYPES)
def half_model(request):
    """The tiny seeded UNet in half precision on ComfyUI's torch device, built under inference mode."""
    import comfy.model_management
    import comfy.model_patcher

    with torch.inference_mode():
        base = build_sd15_base_model(32, seed=0, dtype=request.param)
        yield comfy.model_patcher.ModelPatcher(
            base, comfy.model_management.get_torch_device(), comfy.model_management.unet_offload_device()
        )


def _prior() -> torch.Tensor:
    p = torch.zeros(1, 64, 64)
    p[:, 32:, 32:] = 1.0
    return p


def _organs() -> OrganMasks:
    m = torch.zeros(1, 2, 64, 64)
    m[:, 0, :, :32] = 1.0
    m[:, 1, :32, 32:] = 1.0
    return OrganMasks(names=("right_lung", "left_lung"), masks=m, image_size=(64, 64))


def _regulated(model, tok, enabled: bool = True, hard: bool = False, capture: bool = True):
    m = AnatomyAttentionGate.execute(
        model, _organs(), organs="all", strength=4.0, hard=hard, tau=0.5, sites="64,32", start_percent=0.0,
        end_percent=1.0, background="free", enabled=enabled,
    ).result[0]  # fmt: skip
    m = PathologyCrossAttnReweight.execute(
        m, regulated_prompt(tok, TEXT, random_cond(1), "pleural, effusion"), _prior(), lambda_in=3.0, lambda_out=3.0, start_percent=0.0,
        end_percent=0.4, sites="all", enabled=enabled,
    ).result[0]  # fmt: skip
    m = EnergyLatentCorrector.execute(
        m, regulated_prompt(tok, TEXT, random_cond(1), "pleural, effusion"), _prior(), eta=30.0, iterations=1, end_percent=0.25, kappa=0.1,
        energy_threshold=0.0, sites="16", truncate=True, enabled=enabled,
    ).result[0]  # fmt: skip
    if not capture:
        return m, None
    m, store = AttentionMapCapture.execute(m, regulated_prompt(tok, TEXT, random_cond(1)), words="effusion", sites="16", steps="all",
                                           enabled=enabled).result  # fmt: skip
    return m, store


def _run(model, steps: int = 6) -> torch.Tensor:
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4)) * 0.8
    with torch.inference_mode():
        return sample(model, random_cond(1), random_cond(2), steps=steps, denoise=0.6, latent_image=latent)


def test_full_method_on_device_acts_on_its_steps(half_model, sd1_tokenizer, caplog) -> None:
    caplog.set_level(logging.INFO, logger="cxr_counterfactual")
    plain = _run(half_model)
    model, store = _regulated(half_model, sd1_tokenizer)
    out = _run(model)
    assert torch.isfinite(out).all() and not torch.equal(out, plain)
    (record,) = activity_records(caplog.text)
    steps = {label: m["steps"] for label, m in record["modules"].items()}
    assert steps == {"AnatomyAttentionGate": list(range(6)), "PathologyCrossAttnReweight": [0, 1, 2],
                     "EnergyLatentCorrector": [0, 1], "AttentionMapCapture": list(range(6))}  # fmt: skip
    maps = store.maps()["effusion"]
    assert sorted(maps) == list(range(6)) and all(torch.isfinite(m).all() for m in maps.values())


@pytest.fixture
def deterministic_kernels():
    """Fixed convolution kernels for bit-identity: cudnn.benchmark (ComfyUI turns it on with --fast autotune)
    may pick other kernels from one call to the next (last-bit differences between two plain runs on a GPU),
    so it is off here and cuDNN deterministic, as ComfyUI's --deterministic asks."""
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


def test_disabled_is_bit_identical_and_nothing_leaks_on_device(
    half_model, sd1_tokenizer, deterministic_kernels
):
    first = _run(half_model)  # the first call loads the weights onto the device
    plain = _run(half_model)
    if not torch.equal(first, plain):
        print(f"first call differs from later ones by up to {float((first - plain).abs().max()):.3g}")
    assert torch.equal(_run(half_model), plain), "plain sampling must be deterministic on this device"
    off, _ = _regulated(half_model, sd1_tokenizer, enabled=False)
    assert off is half_model
    assert torch.equal(_run(off), plain)
    on, _ = _regulated(half_model, sd1_tokenizer)
    assert not torch.equal(_run(on), plain)
    assert torch.equal(_run(half_model), plain), "a plain run after a regulated one is unchanged"
    assert installed(half_model, "attn1") == {} and installed(half_model, "attn2") == {}


def test_hard_gate_blocks_cross_organ_attention_in_half_precision(half_model) -> None:
    model = AnatomyAttentionGate.execute(
        half_model, _organs(), organs="all", strength=4.0, hard=True, tau=0.5, sites="64,32", start_percent=0.0,
        end_percent=1.0, background="free", enabled=True,
    ).result[0]  # fmt: skip
    gate = next(iter(installed(model, "attn1").values())).contributions[0]
    probe = add_probe(model, "attn1", parse_site_spec("64"))
    out = _run(model, steps=2)
    assert torch.isfinite(out).all(), "the -inf bias in half precision must not produce NaN"
    for rec in probe.records:
        assert rec["bias"].dtype == half_model.model.get_dtype() and torch.isinf(rec["bias"]).any()
        r = gate.memberships(rec["hw"], torch.device("cpu"))
        sel = r.sum(1)[0] > gate.tau
        probs = attention_probs(rec["q"].cpu(), rec["k"].cpu(), rec["heads"], rec["bias"].cpu())
        mass = per_query_cross_mass(probs, gate.affinity(r))[:, :, sel]
        assert float(mass.max()) < 1e-3


def test_gradient_pass_with_half_precision_weights(half_model, sd1_tokenizer) -> None:
    base = build_corrector(
        half_model, regulated_prompt(sd1_tokenizer, TEXT, random_cond(1), "pleural, effusion"), _prior()
    )
    c = dataclasses.replace(base, n_iter=3, threshold=0.0, record=True)
    out = _run(attach_corrector(half_model, c))
    assert torch.isfinite(out).all()
    assert len(c.trace) == 2
    e = [float(x[0]) for x in c.trace[0]["energies"]]
    assert all(map(lambda v: v == v, e)) and e[-1] < e[0], f"energy must fall in half precision: {e}"


def test_offloaded_weights_give_the_same_result(half_model, sd1_tokenizer) -> None:
    """ComfyUI's low-VRAM path: weights stay on the offload device and are cast per layer (NO_VRAM state)."""
    import comfy.model_management as mm

    model, _ = _regulated(half_model, sd1_tokenizer, capture=False)
    loaded = _run(model)
    mm.unload_all_models()
    before = mm.vram_state
    mm.vram_state = mm.VRAMState.NO_VRAM
    try:
        offloaded = _run(model)
        if half_model.load_device.type == "cuda":
            assert half_model.loaded_size() < half_model.model_size(), "weights must stay offloaded"
    finally:
        mm.vram_state = before
        mm.unload_all_models()
    assert torch.isfinite(offloaded).all()
    assert torch.allclose(offloaded, loaded, rtol=2e-2, atol=2e-2), float((offloaded - loaded).abs().max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_biases_are_built_in_the_attention_dtype(dtype: torch.dtype, hard: bool) -> None:
    """No fp32 N x N bias beside the half-precision one: the gate builds its bias in q's dtype."""
    from cxr_pack.cxr_core.attention.contributions import SelfAttentionGate, SiteCall

    gate = SelfAttentionGate(masks=_organs().masks, gamma=4.0, hard=hard)
    cpu = torch.device("cpu")
    half = gate.bias(SiteCall(("input", 1), "attn1", (16, 16), 256, 256, 1, cpu, dtype=dtype))
    full = gate.bias(SiteCall(("input", 1), "attn1", (16, 16), 256, 256, 1, cpu))
    assert half.dtype == dtype and full.dtype == torch.float32
    assert torch.equal(torch.isinf(half), torch.isinf(full))
    finite = torch.isfinite(full)
    assert torch.allclose(half[finite].float(), full[finite], atol=4.0 * 2**-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_cross_attention_biases_are_built_in_the_attention_dtype(dtype: torch.dtype, sd1_tokenizer) -> None:
    from cxr_pack.cxr_core.attention.contributions import AnatomyTokenGate, PathologyReweight, SiteCall

    reweight = PathologyReweight(prior=_prior(), positions=(5, 6), prompt_len=77)
    anatomy = AnatomyTokenGate(bindings=(((4,), _organs().masks[:, 0]),), prompt_len=77)
    for c in (reweight, anatomy):
        half = c.bias(SiteCall(("input", 1), "attn2", (8, 8), 64, 77, 1, torch.device("cpu"), dtype=dtype))
        full = c.bias(SiteCall(("input", 1), "attn2", (8, 8), 64, 77, 1, torch.device("cpu")))
        assert half.dtype == dtype and torch.allclose(half.float(), full, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("form", ["soft", "hard_low_rank", "hard_groups"])
def test_structured_gate_on_the_device_matches_the_dense_gate(
    dtype: torch.dtype, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate's low-rank / block-sparse form through the host's attention on its device, against the dense bias."""
    import comfy.ldm.modules.attention as attention
    import comfy.model_management
    from cxr_pack.cxr_core.attention import contributions
    from cxr_pack.cxr_core.attention.contributions import SelfAttentionGate
    from cxr_pack.cxr_core.attention.protocol import SiteCall
    from cxr_pack.cxr_core.attention.structured_bias import structured_allowed, structured_attention

    dev = comfy.model_management.get_torch_device()
    fn = attention.optimized_attention
    assert structured_allowed(fn, {}), f"{fn.__name__}: the host's attention should take the compact form"
    hard = form != "soft"
    if hard:  # both forms at this 32x32 grid (by default its size picks the low-rank one)
        monkeypatch.setattr(contributions, "HARD_GATE_FORM", form.removeprefix("hard_"))
    gate = SelfAttentionGate(masks=_organs().masks.to(dev), hard=hard)
    hw, heads = (32, 32), 8
    call = SiteCall(("input", 1), "attn1", hw, 1024, 1024, 1, dev, None, dtype)
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 1024, heads * 40, generator=g).to(dev, dtype) for _ in range(3))
    with torch.inference_mode():
        compact = structured_attention(q, k, v, heads, gate.structured(call), fn, items=1)
        dense = fn(q, k, v, heads, mask=gate.bias(call).unsqueeze(1))
        plain = fn(q, k, v, heads)
    assert torch.isfinite(compact).all()
    err = float((compact.float() - dense.float()).abs().max())
    tol = 1e-2 if dtype == torch.float16 else 5e-2  # half-precision rounding of two kernels' softmax
    assert err < tol, f"{dev} {dtype}: compact gate differs from the dense gate by {err}"
    assert float((dense.float() - plain.float()).abs().max()) > 5 * tol, "the gate must change the output"
