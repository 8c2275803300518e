"""Site schemes read from the model, and the gate's mechanism, on SD1.5-, SD2 (v)- and SDXL-shaped UNets.

Each family is a tiny seeded UNet with the family's real block structure
(cxr_core/random_models.py), built in-process on the real ComfyUI host.
"""

from __future__ import annotations

import math

import pytest
import torch
from attention_probe import add_probe, quadrant_masks
from cxr_pack.cxr_core.attention.engine import installed
from cxr_pack.cxr_core.attention.measures import attention_probs, per_query_cross_mass, predicted_gated_mass
from cxr_pack.cxr_core.attention.site_scheme import UnsupportedModelError, scheme_of
from cxr_pack.cxr_core.attention.sites import parse_site_spec
from cxr_pack.cxr_core.organ_masks import OrganMasks
from cxr_pack.cxr_core.random_models import (
    build_tiny_model_patcher,
    build_tiny_pixart_model_patcher,
    random_family_cond,
)
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from cxr_pack.nodes.attention_sites import model_scheme, model_sites
from helpers import sample

FAMILIES = ("sd15", "sd2", "sdxl")
GAMMA = 4.0

# the families' attention sites as their published architectures define them
EXPECTED = {
    "sd15": dict(
        family="SD1.x", prediction="epsilon", native_px=512, depth=1,
        sites=["input1", "input2", "input4", "input5", "input7", "input8", "middle0", *(f"output{i}" for i in range(3, 12))],
        levels=[0, 0, 1, 1, 2, 2, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0],
        grids=(64, 32, 16, 8),
    ),
    "sd2": dict(
        family="SD2.x", prediction="v-prediction", native_px=768, depth=1,
        sites=["input1", "input2", "input4", "input5", "input7", "input8", "middle0", *(f"output{i}" for i in range(3, 12))],
        levels=[0, 0, 1, 1, 2, 2, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0],
        grids=(96, 48, 24, 12),
    ),
    "sdxl": dict(
        family="SDXL", prediction="epsilon", native_px=1024, depth=2,
        sites=["input4", "input5", "input7", "input8", "middle0", *(f"output{i}" for i in range(0, 6))],
        levels=[1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 1],
        grids=(64, 32),
    ),
}  # fmt: skip


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def family_model(family: str):
    return build_tiny_model_patcher(family=family, seed=0)


def _conds(family: str) -> tuple[list, list]:
    return random_family_cond(family, 1), random_family_cond(family, 2)


def test_scheme_is_read_from_the_model(family: str, family_model) -> None:
    scheme = model_scheme(family_model)
    exp = EXPECTED[family]
    assert (scheme.family, scheme.prediction, scheme.native_px) == (
        exp["family"],
        exp["prediction"],
        exp["native_px"],
    )
    assert [s.name for s in scheme.sites] == exp["sites"]
    assert [s.level for s in scheme.sites] == exp["levels"]
    assert {s.depth for s in scheme.sites} == {exp["depth"]}
    assert scheme.grid_sizes() == exp["grids"]


def test_sd2_epsilon_model_is_a_512_px_model() -> None:
    import comfy.model_base

    m = build_tiny_model_patcher(family="sd2")
    m.model.model_type = comfy.model_base.ModelType.EPS  # an SD2.0-base-like checkpoint
    scheme = scheme_of(m.model)
    assert (scheme.prediction, scheme.native_px, scheme.grid_sizes()) == ("epsilon", 512, (64, 32, 16, 8))


def test_execution_order_depth_and_grids_match_a_real_run(family: str, family_model) -> None:
    """Every transformer block of every site runs, in the scheme's order, on the scheme's (ceil) grid."""
    scheme = model_scheme(family_model)
    latent = (13, 21)  # odd and non-square: grids round up at each level
    m = family_model.clone()
    probe = add_probe(m, "attn1", scheme.keys)
    sample(m, *_conds(family), steps=1, latent_hw=latent)
    seen = [r["site"] for r in probe.records]
    # one sampling step, cond and uncond batched: each transformer block is one call
    assert seen == [s.key for s in scheme.sites for _ in range(s.depth)]
    for r in probe.records:
        assert r["hw"] == scheme.grid(latent, r["site"]), r["site"]
        assert r["q"].shape[1] == r["hw"][0] * r["hw"][1]


def test_node_site_defaults_exist_on_every_family(family: str, family_model) -> None:
    """The nodes' default sites are level names, so an unedited node works on SD1.x, SD2.x and SDXL alike."""
    from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
    from cxr_pack.nodes.attention_capture import AttentionMapCapture
    from cxr_pack.nodes.energy_corrector import EnergyLatentCorrector
    from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight

    expected = {AnatomyAttentionGate: "fine, mid", EnergyLatentCorrector: "coarse", AttentionMapCapture: "coarse",
                PathologyCrossAttnReweight: "all"}  # fmt: skip
    for node, default in expected.items():
        sites = next(i for i in node.define_schema().inputs if i.id == "sites")
        assert sites.default == default, node.__name__
        assert model_sites(family_model, sites.default), (
            f"{node.__name__}: default sites {default!r} on {family}"
        )


def test_level_names_mean_the_same_image_fraction_on_every_family(family: str, family_model) -> None:
    scheme = model_scheme(family_model)
    px = scheme.native_px
    side = {name: {scheme.native_grid(scheme.site(k).level) for k in model_sites(family_model, name)}
            for name in ("fine", "mid", "coarse", "middle")}  # fmt: skip
    assert side["mid"] == {px // 8 // 2}, "mid: 1/16 of the image side"
    assert side["coarse"] == {px // 8 // 4}, "coarse: 1/32 of the image side"
    assert side["fine"] == {max(scheme.grid_sizes())}
    assert model_sites(family_model, "middle") == (("middle", 0),)
    assert all(k[0] != "middle" for k in model_sites(family_model, "fine, mid, coarse"))
    assert model_sites(family_model, "all") == scheme.keys
    assert set(model_sites(family_model, "input")) | set(model_sites(family_model, "middle")) | set(
        model_sites(family_model, "output")
    ) == set(scheme.keys)
    # grid sizes at the native resolution, and NxN spelling
    for g in scheme.grid_sizes():
        picked = model_sites(family_model, f"{g}x{g}")
        assert picked and all(scheme.native_grid(scheme.site(k).level) == g for k in picked)
        assert picked == model_sites(family_model, str(g))


def test_sd15_names_keep_working_on_sd15(tiny_model) -> None:
    for spec in ("64,32", "16", "8", "input4,output9", "all", "input", "64x64"):
        assert model_sites(tiny_model, spec) == parse_site_spec(spec), spec
    assert len(model_sites(tiny_model, "64,32")) == 10


@pytest.mark.parametrize(
    ("family_name", "bad"), [("sdxl", "input1"), ("sdxl", "16"), ("sd2", "64"), ("sd15", "input3")]
)
def test_names_the_model_does_not_have_are_refused_with_its_own_names(family_name: str, bad: str) -> None:
    m = build_tiny_model_patcher(family=family_name)
    scheme = model_scheme(m)
    with pytest.raises(ValueError, match=f"cannot read '{bad}'") as err:
        model_sites(m, bad)
    msg = str(err.value)
    assert f"{scheme.native_px} px" in msg and ", ".join(str(g) for g in scheme.grid_sizes()) in msg
    assert scheme.sites[0].name in msg


def test_scheme_is_discovered_once_per_model_and_left_off_the_model(family_model) -> None:
    unet = family_model.model.diffusion_model
    before = set(vars(unet))
    first = model_scheme(family_model)
    assert model_scheme(family_model.clone()) is first, "clones share the UNet and its scheme"
    assert set(vars(unet)) == before, "nothing is written onto the model"
    other = build_tiny_model_patcher(family="sd15", seed=1)
    assert model_scheme(other) is not model_scheme(build_tiny_model_patcher(family="sd15", seed=1))


def test_dit_model_is_refused_with_the_supported_families() -> None:
    dit = build_tiny_pixart_model_patcher()
    assert type(dit.model.diffusion_model).__name__ == "PixArtMS"
    with pytest.raises(UnsupportedModelError) as err:
        model_sites(dit, "all")
    msg = str(err.value)
    for name in ("PixArtAlpha", "PixArtMS", "SD1.x", "SD2.x", "SDXL", "DiT/MMDiT"):
        assert name in msg, name
    # the node refuses it before touching anything
    with pytest.raises(UnsupportedModelError, match="Supported families"):
        _gate(dit)


def test_unet_of_another_family_is_refused() -> None:
    import comfy.model_patcher
    import comfy.supported_models
    from cxr_pack.cxr_core.random_models import init_random_, sd15_unet_config

    cfg = comfy.supported_models.SD15({**sd15_unet_config(32), "context_dim": 512})
    model = cfg.get_model({})
    init_random_(model.diffusion_model, 0)
    cpu = torch.device("cpu")
    m = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    with pytest.raises(UnsupportedModelError, match="512-wide text context.*Supported families: SD1.x"):
        model_sites(m, "all")


def test_not_a_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="model: expected a MODEL"):
        model_sites(object(), "all")


# --- the gate's mechanism on every family ---------------------------------------------------------------


def _organs() -> OrganMasks:
    return OrganMasks(names=("left_lung", "heart"), masks=quadrant_masks(128), image_size=(128, 128))


def _gate(model, **kw):
    args = dict(
        organs="all", strength=GAMMA, hard=False, tau=0.5, sites="all", start_percent=0.0, end_percent=1.0,
        background="free", enabled=True,
    )  # fmt: skip
    args.update(kw)
    return AnatomyAttentionGate.execute(model, _organs(), **args).result[0]


def _mass(probe, gate) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query cross-organ mass of the gated queries: unregulated (same q, k) and gated (actual bias)."""
    m0, m1 = [], []
    for rec in probe.records:
        r = gate.memberships(rec["hw"], torch.device("cpu"))
        a = gate.affinity(r)
        gated = (r.sum(1) > gate.tau)[0]
        p0 = attention_probs(rec["q"], rec["k"], rec["heads"])
        p1 = attention_probs(rec["q"], rec["k"], rec["heads"], rec["bias"])
        m0.append(per_query_cross_mass(p0, a)[:, :, gated].flatten())
        m1.append(per_query_cross_mass(p1, a)[:, :, gated].flatten())
    return torch.cat(m0), torch.cat(m1)


def test_soft_gate_mass_equals_the_per_query_prediction(family: str, family_model) -> None:
    model = _gate(family_model)
    gate = next(iter(installed(model, "attn1").values())).contributions[0]
    scheme = model_scheme(family_model)
    probe = add_probe(model, "attn1", scheme.keys)
    out = sample(model, *_conds(family), steps=2, latent_hw=(16, 16))
    assert torch.isfinite(out).all()
    assert len(probe.records) == 2 * sum(s.depth for s in scheme.sites), "every transformer block is gated"
    assert all(r["bias"] is not None for r in probe.records)
    m0, m1 = _mass(probe, gate)
    assert float(m0.mean()) > 0.2, "unregulated cross-organ mass should be large on random weights"
    assert torch.allclose(m1, predicted_gated_mass(m0, GAMMA), rtol=1e-3, atol=1e-6)
    ratio = float(m1.mean() / m0.mean())
    print(f"{family}: cross-organ mass unregulated {float(m0.mean()):.4f}, gated {float(m1.mean()):.5f}, "
          f"ratio {ratio:.4f} (exp(-gamma) = {math.exp(-GAMMA):.4f}), {m0.numel()} query-heads")  # fmt: skip
    assert ratio <= math.exp(-GAMMA) / (1.0 - float(m0.max()))


def test_hard_gate_leaves_almost_no_cross_organ_mass(family: str, family_model) -> None:
    model = _gate(family_model, hard=True)
    gate = next(iter(installed(model, "attn1").values())).contributions[0]
    probe = add_probe(model, "attn1", model_scheme(family_model).keys)
    out = sample(model, *_conds(family), steps=2, latent_hw=(16, 16))
    assert torch.isfinite(out).all()
    _, m1 = _mass(probe, gate)
    print(f"{family}: hard-gate cross-organ mass max {float(m1.max()):.2e}")
    assert float(m1.max()) < 1e-3


def test_gate_on_non_square_latent(family: str, family_model) -> None:
    """Masks of a non-square image map onto every grid of a non-square latent (ceil rounding)."""
    masks = torch.zeros(2, 96, 160)
    masks[0, :, :80] = 1.0
    masks[1, :48, 80:] = 1.0
    organs = OrganMasks(names=("left_lung", "heart"), masks=masks, image_size=(96, 160))
    model = AnatomyAttentionGate.execute(
        family_model, organs, organs="all", strength=GAMMA, hard=True, tau=0.5, sites="all", start_percent=0.0,
        end_percent=1.0, background="free", enabled=True,
    ).result[0]  # fmt: skip
    gate = next(iter(installed(model, "attn1").values())).contributions[0]
    scheme = model_scheme(family_model)
    probe = add_probe(model, "attn1", scheme.keys)
    out = sample(model, *_conds(family), steps=1, latent_hw=(12, 20))
    assert torch.isfinite(out).all()
    assert {r["hw"] for r in probe.records} == {scheme.grid((12, 20), k) for k in scheme.keys}
    _, m1 = _mass(probe, gate)
    assert m1.numel() > 0 and float(m1.max()) < 1e-3


def test_disabled_gate_is_bit_identical_and_the_input_model_is_untouched(family: str, family_model) -> None:
    pos, neg = _conds(family)
    before = repr(family_model.model_options)
    wrappers_before = repr(family_model.wrappers)
    plain = sample(family_model, pos, neg, seed=5, steps=3)
    off = _gate(family_model, enabled=False)
    assert off is family_model
    assert torch.equal(sample(off, pos, neg, seed=5, steps=3), plain)
    on = _gate(family_model)
    gated = sample(on, pos, neg, seed=5, steps=3)
    assert not torch.equal(gated, plain)
    # no state left on the model: its options are unchanged and plain sampling after a gated run is identical
    assert repr(family_model.model_options) == before and repr(family_model.wrappers) == wrappers_before
    assert not installed(family_model, "attn1")
    assert torch.equal(sample(family_model, pos, neg, seed=5, steps=3), plain)
    assert torch.equal(sample(on, pos, neg, seed=5, steps=3), gated), "a second gated run repeats the first"


def test_window_on_the_last_step_changes_nothing_before_it(family: str, family_model) -> None:
    pos, neg = _conds(family)
    late = _gate(family_model, start_percent=1.0, end_percent=1.0)
    assert installed(late, "attn1")
    plain_states: list[torch.Tensor] = []
    late_states: list[torch.Tensor] = []
    sample(
        family_model, pos, neg, seed=5, steps=3, callback=lambda i, x0, x, n: plain_states.append(x0.clone())
    )
    sample(late, pos, neg, seed=5, steps=3, callback=lambda i, x0, x, n: late_states.append(x0.clone()))
    assert torch.equal(late_states[0], plain_states[0]) and torch.equal(late_states[1], plain_states[1])
    assert not torch.equal(late_states[2], plain_states[2])


# --- the energy corrector's truncated gradient pass follows the scheme ------------------------------------


def test_gradient_pass_runs_every_block_of_the_last_energy_site_and_nothing_after(family: str) -> None:
    """The pass stops after the last transformer block of the last energy site in execution order."""
    import comfy.patcher_extension
    from cxr_pack.cxr_core.attention.correction import LatentCorrector, make_sampler_wrapper
    from cxr_pack.cxr_core.attention.engine import ensure_run_state
    from cxr_pack.cxr_core.attention.schedule import Window

    with torch.inference_mode():
        model = build_tiny_model_patcher(family=family, seed=0)
    scheme = model_scheme(model)
    sites = model_sites(model, "coarse")
    last = sites[-1]
    assert last[0] == "output" and scheme.site(last).depth == EXPECTED[family]["depth"]
    prior = torch.zeros(1, 128, 128)
    prior[:, 32:96, 32:96] = 1.0
    corrector = LatentCorrector(
        prior=prior, columns=(1, 2), prompt_len=77, window=Window(0.0, 0.5), sites=sites, threshold=0.0, record=True
    )  # fmt: skip
    unet = model.model.diffusion_model
    counts: dict[str, int] = {}

    def count(name: str, module: torch.nn.Module) -> None:
        original = module.forward

        def forward(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if torch.is_grad_enabled():
                counts[name] = counts.get(name, 0) + 1
            return original(*args, **kwargs)

        module.forward = forward

    last_transformer = next(m for m in unet.output_blocks[last[1]] if hasattr(m, "transformer_blocks"))
    for i, block in enumerate(last_transformer.transformer_blocks):
        count(f"last site block {i}", block)
    count("next block", unet.output_blocks[last[1] + 1][0])
    m = model.clone()
    m.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, "test.correction", make_sampler_wrapper(corrector)
    )
    ensure_run_state(m)
    with torch.inference_mode():
        out = sample(m, *_conds(family), steps=2, cfg=1.0, latent_hw=(16, 16))
    assert torch.isfinite(out).all()
    passes = 2 * len(corrector.trace)  # one pass per iteration plus the recorded final energy
    assert passes > 0
    energies = [float(e.mean()) for t in corrector.trace for e in t["energies"]]
    assert all(math.isfinite(e) for e in energies)
    depth = len(last_transformer.transformer_blocks)
    assert [counts.get(f"last site block {i}", 0) for i in range(depth)] == [passes] * depth
    assert counts.get("next block", 0) == 0
