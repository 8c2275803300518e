"""Windows follow the run's own steps: every denoise, sampler, split run; empty windows are refused.

Each module's steps are read from the run's activity record (the ``cxr-activity`` log line the engine
writes at the end of every sampling call) and compared with the steps the window names, computed here
by hand: step i of an n-step call has progress i / (n - 1).
"""

from __future__ import annotations

import logging

import pytest
import torch
from attention_probe import lower_right_prior, split_lung_organs
from cxr_pack.cxr_core.attention.schedule import EmptyWindowError, RunSchedule, Window
from cxr_pack.cxr_runner.activity import activity_records
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from cxr_pack.nodes.energy_corrector import EnergyLatentCorrector
from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight
from helpers import random_cond, regulated_prompt, sample

TEXT = "chest x-ray, left pleural effusion"
GATE, REWEIGHT, CORRECTOR = "AnatomyAttentionGate", "PathologyCrossAttnReweight", "EnergyLatentCorrector"


def _regulated(model, tok, schedule: str = "run", gate=(0.2, 0.7), reweight=(0.0, 0.4), correct_end=0.25):
    m = AnatomyAttentionGate.execute(
        model, split_lung_organs(), organs="all", strength=4.0, hard=False, tau=0.5, sites="64,32", start_percent=gate[0],
        end_percent=gate[1], background="free", enabled=True, window_schedule=schedule,
    ).result[0]  # fmt: skip
    m = PathologyCrossAttnReweight.execute(
        m, regulated_prompt(tok, TEXT, random_cond(1), "pleural, effusion"), lower_right_prior(), lambda_in=3.0, lambda_out=3.0, start_percent=reweight[0],
        end_percent=reweight[1], sites="all", enabled=True, window_schedule=schedule,
    ).result[0]  # fmt: skip
    return EnergyLatentCorrector.execute(
        m, regulated_prompt(tok, TEXT, random_cond(1), "pleural, effusion"), lower_right_prior(), eta=30.0, iterations=1, end_percent=correct_end, kappa=0.1,
        energy_threshold=0.0, sites="16", truncate=True, enabled=True, window_schedule=schedule,
    ).result[0]  # fmt: skip


def _activity(caplog) -> list[dict]:
    return activity_records(caplog.text)


def _steps(record: dict) -> dict[str, list[int]]:
    return {label: m["steps"] for label, m in record["modules"].items()}


def _source_latent() -> torch.Tensor:
    """Stands in for a VAE-encoded radiograph: the SDEdit start of a denoise < 1 run."""
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(11)) * 0.8


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "ddim"])
@pytest.mark.parametrize("denoise", [1.0, 0.8, 0.6, 0.3])
def test_each_module_acts_on_exactly_its_windows_steps(
    inference_model, sd1_tokenizer, caplog, sampler, denoise
):
    caplog.set_level(logging.INFO, logger="cxr_counterfactual")
    model = _regulated(inference_model, sd1_tokenizer)
    with torch.inference_mode():
        out = sample(
            model, random_cond(1), random_cond(2), steps=10, sampler_name=sampler, denoise=denoise,
            latent_image=_source_latent(),
        )  # fmt: skip
    assert torch.isfinite(out).all()
    (record,) = _activity(caplog)
    assert record["n_steps"] == 10
    # 10 steps: progress 0, 1/9, ..., 1. Gate 0.2..0.7 -> 2..6; reweight 0..0.4 -> 0..3; correction 0..0.25 -> 0..2
    assert _steps(record) == {GATE: [2, 3, 4, 5, 6], REWEIGHT: [0, 1, 2, 3], CORRECTOR: [0, 1, 2]}
    assert record["modules"][CORRECTOR]["calls"] == 3, "one gradient pass per corrected step"
    assert all(m["calls"] > 0 for m in record["modules"].values())


def test_ksampler_advanced_start_step_counts_the_steps_it_takes(
    inference_model, sd1_tokenizer, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="cxr_counterfactual")
    model = _regulated(inference_model, sd1_tokenizer)
    with torch.inference_mode():
        sample(model, random_cond(1), random_cond(2), steps=10, start_step=4, latent_image=_source_latent())
    (record,) = _activity(caplog)
    assert record["n_steps"] == 6  # steps 4..9 of 10: progress 0, 0.2, ..., 1 of this call
    assert _steps(record) == {GATE: [1, 2, 3], REWEIGHT: [0, 1, 2], CORRECTOR: [0, 1]}


def test_sampler_custom_with_truncated_sigmas(inference_model, sd1_tokenizer, caplog) -> None:
    import comfy.sample
    import comfy.samplers

    caplog.set_level(logging.INFO, logger="cxr_counterfactual")
    model = _regulated(inference_model, sd1_tokenizer)
    sigmas = comfy.samplers.calculate_sigmas(
        inference_model.get_model_object("model_sampling"), "karras", 12
    )[5:]
    latent = _source_latent()
    with torch.inference_mode():
        comfy.sample.sample_custom(
            model, comfy.sample.prepare_noise(latent, 0), 5.0, comfy.samplers.sampler_object("euler"), sigmas,
            random_cond(1), random_cond(2), latent, disable_pbar=True, seed=0,
        )  # fmt: skip
    (record,) = _activity(caplog)
    assert record["n_steps"] == 7
    assert record["sigmas"][0] == pytest.approx(float(sigmas[0]), rel=1e-5)
    # 7 steps: progress i/6. Gate 0.2..0.7 -> 2..4; reweight 0..0.4 -> 0..2; correction 0..0.25 -> 0..1
    assert _steps(record) == {GATE: [2, 3, 4], REWEIGHT: [0, 1, 2], CORRECTOR: [0, 1]}


def test_a_window_with_no_step_is_refused_naming_node_window_and_run(inference_model, sd1_tokenizer) -> None:
    model = _regulated(inference_model, sd1_tokenizer, gate=(0.5, 0.5))  # 10 steps: progress i/9, never 0.5
    with torch.inference_mode(), pytest.raises(EmptyWindowError) as err:
        sample(model, random_cond(1), random_cond(2), steps=10)
    text = str(err.value)
    assert "AnatomyAttentionGate" in text and "progress 0.5..0.5 of the run's steps" in text
    assert "10 step(s), sigma 14.61 -> 0" in text and "bypass the node" in text


def test_model_schedule_is_a_visible_option_and_its_empty_window_is_refused(
    inference_model, sd1_tokenizer, caplog
) -> None:
    """The old meaning (fraction of the model's schedule) misses an SDEdit at denoise 0.6 entirely."""
    caplog.set_level(logging.INFO, logger="cxr_counterfactual")
    latent = _source_latent()
    old = _regulated(inference_model, sd1_tokenizer, schedule="model", gate=(0.0, 1.0))
    with torch.inference_mode(), pytest.raises(EmptyWindowError, match="PathologyCrossAttnReweight") as err:
        sample(old, random_cond(1), random_cond(2), steps=20, denoise=0.6, latent_image=latent)
    assert "of the model's noise schedule" in str(err.value) and "window_schedule" in str(err.value)
    new = _regulated(inference_model, sd1_tokenizer, gate=(0.0, 1.0))
    with torch.inference_mode():
        sample(new, random_cond(1), random_cond(2), steps=20, denoise=0.6, latent_image=latent)
    (record,) = _activity(caplog)
    # 20 steps: progress i/19; 0.4 -> steps 0..7 (8 of 20), 0.25 -> 0..4 (5 of 20)
    assert _steps(record) == {GATE: list(range(20)), REWEIGHT: list(range(8)), CORRECTOR: list(range(5))}


def test_run_schedule_arithmetic() -> None:
    s = RunSchedule(torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0]))
    assert s.n_steps == 4 and [s.progress(i) for i in range(4)] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert s.window_steps(Window(0.0, 0.4)) == (0, 1)
    assert s.window_steps(Window(1.0, 1.0)) == (3,)
    assert s.step_of(10.0) == 0 and s.step_of(5.0) == 1 and s.step_of(3.0) == 1 and s.step_of(0.5) == 3
    assert s.active(Window(0.0, 0.4), 5.0) and not s.active(Window(0.0, 0.4), 2.0)
    model = Window(0.0, 0.5, "model", sigma_start=6.0, sigma_end=2.0)
    assert s.window_steps(model) == (1, 2)
    with pytest.raises(ValueError, match="start <= end"):
        Window(0.6, 0.2)
