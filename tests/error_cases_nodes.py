"""The bad inputs of docs/errors.md for the prior, mask, attention and metrics nodes (see error_cases.py)."""

from __future__ import annotations

import math

import torch
from cxr_input_helpers import synthetic_organ_masks
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from cxr_pack.nodes.attention_capture import AttentionMapCapture, AttentionMapRender
from cxr_pack.nodes.cxr_prompt import CXRPrompt
from cxr_pack.nodes.energy_corrector import EnergyLatentCorrector
from cxr_pack.nodes.fid import CXRFIDAccumulate, CXRFIDCompute, CXRInceptionLoader
from cxr_pack.nodes.lung_split import OrganMaskSplitLungs
from cxr_pack.nodes.metrics import CXRMetrics
from cxr_pack.nodes.organ_mask_compose import OrganMaskFromMask
from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight
from cxr_pack.nodes.spatial_prior import PathologySpatialPrior
from error_cases import PROMPT, Ctx, H, W, case


def _gate(ctx: Ctx, **kw) -> object:
    args = dict(organs="all", strength=4.0, hard=False, tau=0.5, sites="64,32", start_percent=0.0,
                end_percent=1.0, background="free", enabled=True)  # fmt: skip
    args.update(kw)
    return AnatomyAttentionGate.execute(ctx.model, synthetic_organ_masks(128, 128), **args)


def _prior(h: int = 128, w: int = 128) -> torch.Tensor:
    p = torch.zeros(1, h, w)
    p[:, h // 2 :, w // 2 :] = 1.0
    return p


def _prompt(ctx: Ctx, words: str = "pleural, effusion", anatomy: str = "") -> object:
    """The prompt a CXR Prompt node gives for PROMPT, encoded as random_cond(1) (the positive _sdedit samples)."""
    from helpers import random_cond, regulated_prompt

    return regulated_prompt(ctx.clip, PROMPT, random_cond(1), words, anatomy)


def _reweight(ctx: Ctx, **kw) -> object:
    args = dict(prior=_prior(), lambda_in=3.0, lambda_out=3.0, start_percent=0.0, end_percent=0.4, sites="all",
                enabled=True)  # fmt: skip
    args.update(kw)
    prompt = args.pop("prompt", None) or _prompt(ctx)
    return PathologyCrossAttnReweight.execute(ctx.model, prompt, **args)


def _corrector(ctx: Ctx, **kw) -> object:
    args = dict(prior=_prior(), eta=30.0, iterations=1, end_percent=0.25, kappa=0.1, energy_threshold=0.2,
                sites="16", truncate=True, enabled=True)  # fmt: skip
    args.update(kw)
    return EnergyLatentCorrector.execute(ctx.model, _prompt(ctx), **args)


# ---- CXRPrompt ----------------------------------------------------------------------------------
@case
def prompt_clip_missing(ctx: Ctx) -> object:
    return CXRPrompt.execute(None, PROMPT, "effusion")


@case
def prompt_text_empty(ctx: Ctx) -> object:
    return CXRPrompt.execute(ctx.text_encoder, "  ", "effusion")


@case
def prompt_word_not_in_prompt(ctx: Ctx) -> object:
    return CXRPrompt.execute(ctx.text_encoder, PROMPT, "pneumothorax")


@case
def prompt_anatomy_binding(ctx: Ctx) -> object:
    return CXRPrompt.execute(ctx.text_encoder, PROMPT, "effusion", "heart")


@case
def prompt_not_the_sampled_one(ctx: Ctx) -> object:
    from helpers import random_cond, sample

    return sample(_reweight(ctx).result[0], random_cond(5), random_cond(2), steps=1, latent_hw=(16, 16))


def _spatial(**kw) -> object:
    args = dict(pathology="effusion", side="left", extent=0.35, feather_px=2.0, zone="lower")
    args.update(kw)
    return PathologySpatialPrior.execute(synthetic_organ_masks(H, W), **args)


# ---- PathologySpatialPrior ----------------------------------------------------------------------
@case
def prior_pathology(ctx: Ctx) -> object:
    return _spatial(pathology="fracture")


@case
def prior_side(ctx: Ctx) -> object:
    return _spatial(side="both")


@case
def prior_extent_zero(ctx: Ctx) -> object:
    return _spatial(extent=0.0)


@case
def prior_extent_nan(ctx: Ctx) -> object:
    return _spatial(extent=math.nan)


@case
def prior_feather(ctx: Ctx) -> object:
    return _spatial(feather_px=-1.0)


@case
def prior_zone(ctx: Ctx) -> object:
    return _spatial(pathology="opacity", zone="apex")


@case
def prior_custom_without_mask(ctx: Ctx) -> object:
    return _spatial(pathology="custom")


# ---- OrganMaskFromMask, OrganMaskSplitLungs -----------------------------------------------------
@case
def from_mask_organ_twice(ctx: Ctx) -> object:
    return OrganMaskFromMask.execute(torch.ones(1, H, W), "left lung", synthetic_organ_masks(H, W))


@case
def from_mask_size(ctx: Ctx) -> object:
    return OrganMaskFromMask.execute(torch.ones(1, 64, 64), "spine", synthetic_organ_masks(H, W))


@case
def split_organ_missing(ctx: Ctx) -> object:
    return OrganMaskSplitLungs.execute(synthetic_organ_masks(H, W).select(["heart"]))


@case
def split_one_lung(ctx: Ctx) -> object:
    om = synthetic_organ_masks(H, W)
    return OrganMaskSplitLungs.execute(OrganMaskFromMask.execute(om.get("right_lung"), "lungs",
                                                                 om.select(["heart"])).result[0])  # fmt: skip


@case
def split_threshold(ctx: Ctx) -> object:
    return OrganMaskSplitLungs.execute(synthetic_organ_masks(H, W), threshold=math.nan)


# ---- attention nodes ---------------------------------------------------------------------------
@case
def gate_strength_nan(ctx: Ctx) -> object:
    return _gate(ctx, strength=math.nan)


@case
def gate_tau_inf(ctx: Ctx) -> object:
    return _gate(ctx, tau=math.inf)


@case
def gate_organs_unknown(ctx: Ctx) -> object:
    return _gate(ctx, organs="spleen")


@case
def gate_sites(ctx: Ctx) -> object:
    return _gate(ctx, sites="input3")


@case
def gate_model_dit(ctx: Ctx) -> object:
    from cxr_pack.cxr_core.random_models import build_tiny_pixart_model_patcher

    return _gate(Ctx(ctx.inp, ctx.out, build_tiny_pixart_model_patcher(), ctx.clip))


@case
def gate_window(ctx: Ctx) -> object:
    return _gate(ctx, start_percent=0.8, end_percent=0.2)


@case
def gate_prompt_not_a_cxr_prompt(ctx: Ctx) -> object:
    return _gate(ctx, prompt="chest x-ray, enlarged heart")


@case
def gate_masks_other_aspect(ctx: Ctx) -> object:
    from helpers import random_cond, sample

    return sample(_gate(ctx).result[0], random_cond(1), random_cond(2), steps=1, latent_hw=(16, 24))


@case
def gate_window_without_steps(ctx: Ctx) -> object:
    from helpers import random_cond, sample

    model = _gate(ctx, start_percent=0.5, end_percent=0.5).result[0]  # 10 steps: progress i/9 is never 0.5
    return sample(model, random_cond(1), random_cond(2), steps=10, latent_hw=(16, 16))


def _sdedit(model) -> object:  # noqa: ANN001
    """KSampler's path at the example workflow's denoise 0.6, 20 steps, from a latent."""
    from helpers import random_cond, sample

    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    return sample(model, random_cond(1), random_cond(2), steps=20, denoise=0.6, latent_image=latent)


@case
def reweight_model_window_misses_sdedit(ctx: Ctx) -> object:
    return _sdedit(_reweight(ctx, window_schedule="model").result[0])


@case
def corrector_model_window_misses_sdedit(ctx: Ctx) -> object:
    return _sdedit(_corrector(ctx, window_schedule="model").result[0])


@case
def reweight_lambda_in_nan(ctx: Ctx) -> object:
    return _reweight(ctx, lambda_in=math.nan)


@case
def reweight_lambda_out_zero(ctx: Ctx) -> object:
    return _reweight(ctx, lambda_out=0.0)


@case
def reweight_words_empty(ctx: Ctx) -> object:
    return _reweight(ctx, prompt=_prompt(ctx, words=" "))


@case
def reweight_prior_empty(ctx: Ctx) -> object:
    return _reweight(ctx, prior=torch.zeros(1, 128, 128))


@case
def corrector_eta_nan(ctx: Ctx) -> object:
    return _corrector(ctx, eta=math.nan)


@case
def corrector_kappa_inf(ctx: Ctx) -> object:
    return _corrector(ctx, kappa=math.inf)


@case
def corrector_iterations(ctx: Ctx) -> object:
    return _corrector(ctx, iterations=9)


@case
def corrector_prior_range(ctx: Ctx) -> object:
    return _corrector(ctx, prior=torch.full((1, 128, 128), 2.0))


@case
def capture_words_empty(ctx: Ctx) -> object:
    return AttentionMapCapture.execute(ctx.model, _prompt(ctx, words=""), "", "16", "all", True)


@case
def capture_word_not_in_prompt(ctx: Ctx) -> object:
    return AttentionMapCapture.execute(ctx.model, _prompt(ctx), "cardiomegaly", "16", "all", True)


@case
def render_alpha_nan(ctx: Ctx) -> object:
    return AttentionMapRender.execute(None, torch.zeros(1, 64, 64, 3), "mean", math.nan)


# ---- metrics ----------------------------------------------------------------------------------
@case
def metrics_csv_name(ctx: Ctx) -> object:
    img = torch.rand(1, 32, 32, 3)
    return CXRMetrics.execute(img, img, torch.ones(1, 32, 32), csv_name="../../escape.csv")


@case
def metrics_sizes_differ(ctx: Ctx) -> object:
    return CXRMetrics.execute(torch.rand(1, 32, 32, 3), torch.rand(1, 32, 48, 3), torch.ones(1, 32, 32),
                              csv_name="")  # fmt: skip


@case
def metrics_region_size(ctx: Ctx) -> object:
    img = torch.rand(1, 32, 32, 3)
    return CXRMetrics.execute(img, img, torch.ones(1, 16, 16), csv_name="")


@case
def fid_study_name(ctx: Ctx) -> object:
    return CXRFIDAccumulate.execute(torch.rand(1, 32, 32, 3), "../study", "real")


@case
def fid_compute_missing_set(ctx: Ctx) -> object:
    return CXRFIDCompute.execute("study", "real", "generated")


@case
def inception_weights_missing(ctx: Ctx) -> object:
    return CXRInceptionLoader.execute("nothing.safetensors")
