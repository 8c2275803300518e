"""The regulated UNet does not make the device wait at every attention call.

Reading a device tensor's value on the host (``.item()``, ``float(t)``, ``bool(t)``, ``nonzero``) is a
host-device synchronisation: on a GPU the host stops queueing kernels until the device has run all
it was given. So is making a device tensor from host data (``torch.tensor(list, device=...)``).
ComfyUI's plain euler step makes none, so a pack that makes one per attention call turns a
launch-bound GPU step serial. These tests count the reads the real host's sampling makes (the dispatch
mode of scripts/count_host_reads.py sees every operator the CPU runs, the same operators a GPU would
run) and ask the per-step cost of the regulation: the gate, the reweight and the capture read the step's
sigma once per model call, not once per attention call, the capture keeps its maps on the device until
the run ends, and the observers make their token-column index tensors once per run.
"""

from __future__ import annotations

import torch
from attention_probe import lower_right_prior, split_lung_organs
from count_host_reads import counter
from cxr_pack.cxr_core.attention import contributions
from cxr_pack.cxr_core.organ_masks import OrganMasks
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from cxr_pack.nodes.attention_capture import AttentionMapCapture
from cxr_pack.nodes.energy_corrector import EnergyLatentCorrector
from cxr_pack.nodes.pathology_reweight import PathologyCrossAttnReweight
from helpers import random_cond, regulated_prompt, sample

TEXT = "chest x-ray, left pleural effusion"


def _count(model, steps: int):  # noqa: ANN202
    """The host reads and operators of one sampling run (scripts/count_host_reads.py's dispatch counter)."""
    with torch.inference_mode():
        sample(model, random_cond(1), random_cond(2), steps=steps)  # warm: per-run caches are not the point
        with counter(cuda=False) as counts:
            sample(model, random_cond(1), random_cond(2), steps=steps)
    return counts


def _per_step(model, what: str = "reads") -> float:
    """Host reads (or operators) added by each further step: an 8-step run minus a 4-step run, / 4."""
    runs = [_count(model, n) for n in (8, 4)]
    totals = [r.reads if what == "reads" else sum(r.ops.values()) for r in runs]
    return (totals[0] - totals[1]) / 4


def _gate(model):
    return AnatomyAttentionGate.execute(
        model, split_lung_organs(), organs="all", strength=4.0, hard=False, tau=0.5, sites="all", start_percent=0.0,
        end_percent=1.0, background="free", enabled=True,
    ).result[0]  # fmt: skip


def _attention_modules(model, tok):
    m = _gate(model)
    m = PathologyCrossAttnReweight.execute(
        m, regulated_prompt(tok, TEXT, random_cond(1)), lower_right_prior(), lambda_in=3.0, lambda_out=3.0,
        start_percent=0.0, end_percent=1.0, sites="all", enabled=True,
    ).result[0]  # fmt: skip
    return AttentionMapCapture.execute(
        m, regulated_prompt(tok, TEXT, random_cond(1)), words="pleural, effusion", sites="all", steps="all",
        enabled=True,
    ).result  # fmt: skip


def test_attention_modules_read_the_sigma_once_per_model_call(inference_model, sd1_tokenizer) -> None:
    plain = _per_step(inference_model)
    model, store = _attention_modules(inference_model, sd1_tokenizer)
    regulated = _per_step(model)
    # euler with CFG: one model call per step (cond and uncond batched), so one read of its sigma;
    # reading it at each of the tiny UNet's 32 patched attention calls would add 32 per step
    assert regulated - plain == 1, (plain, regulated)
    maps = store.maps()
    assert set(maps) == {"pleural", "effusion"}
    assert all(m.device.type == "cpu" for by_step in maps.values() for m in by_step.values())
    assert sorted(maps["pleural"]) == list(range(4))  # the latest run: 4 steps


def test_the_correction_pass_does_not_read_its_own_sigma_back(inference_model, sd1_tokenizer) -> None:
    plain = _per_step(inference_model)
    model = EnergyLatentCorrector.execute(
        inference_model, regulated_prompt(sd1_tokenizer, TEXT, random_cond(1)), lower_right_prior(), eta=30.0,
        iterations=1, end_percent=1.0, kappa=0.1, energy_threshold=0.0, sites="16", truncate=True,
        enabled=True,
    ).result[0]  # fmt: skip
    # a corrected step takes its sigma from the sampling call's sigmas, read to the host once per call; the
    # pass's attention calls reuse it, and the probe makes its token columns once per run (reading the sigma
    # back and making the columns from a list at each call added 10 per corrected step); the energy for the
    # record and both decisions ("all gradients finite?", "any item still above the threshold?") reach the
    # host in one copy (they were 3 reads). That copy is the one wait per corrected step on a GPU; on the
    # CPU it is no copy at all, so nothing is left to count here.
    assert _per_step(model) - plain == 0


def test_the_low_rank_gate_adds_few_operators_per_call(inference_model) -> None:
    """On a launch-bound GPU every kernel counts: the gate's extra channels are built once per run.

    Per call the low-rank gate adds 3: q, k and v stacked, their extra channels concatenated, q's
    channels scaled in place; and the step reads its sigma once (2: max, item). It was 4 (a scale and
    a concatenation each for q, k and v), and about 12 when the channels' zero buffers, casts and slice
    copies were made at every call.
    """
    plain = _per_step(inference_model, "operators")
    added = _per_step(_gate(inference_model), "operators") - plain
    calls = 16  # the tiny UNet's 16 self-attention sites, once per step (cond and uncond batched)
    assert added <= 3 * calls + 2, (plain, added)


def _hard_gate_three_classes(model):
    m = torch.zeros(1, 2, 128, 128)
    m[:, 0, :64, :64] = 1.0  # two organs over the top half; the bottom half is free background
    m[:, 1, :64, 64:] = 1.0
    organs = OrganMasks(names=("right_lung", "left_lung"), masks=m, image_size=(128, 128))
    return AnatomyAttentionGate.execute(
        model, organs, organs="all", strength=4.0, hard=True, tau=0.5, sites="all", start_percent=0.0,
        end_percent=1.0, background="free", enabled=True,
    ).result[0]  # fmt: skip


def test_the_hard_gate_on_small_grids_takes_the_three_operator_low_rank_form(inference_model) -> None:
    """Below GROUPS_MIN_TOKENS (every grid of this 128-px run) the hard gate costs what the soft gate does: the
    block-sparse groups' 18 operators per call cost a launch-bound GPU more than their attention saves."""
    plain = _per_step(inference_model, "operators")
    added = _per_step(_hard_gate_three_classes(inference_model), "operators") - plain
    assert added <= 3 * 16 + 2, (plain, added)


def test_the_block_sparse_hard_gate_gathers_once_per_call(inference_model, monkeypatch) -> None:
    """Three token classes: q, k and v gathered once into class order, each class's keys a slice.

    Per call: q, k and v stacked and gathered in one, a concatenation and a gather back, and per class
    beyond the first an attention call of the host's (SDPA, its output's reshape, copies of the sliced
    inputs); plus the step's sigma read (2). It was a gather of q, k and v and a scatter per class
    (about 25 per call here), then three gathers (19); 18 now.
    """
    monkeypatch.setattr(contributions, "HARD_GATE_FORM", "groups")  # the form of grids from 96x96 on
    plain = _per_step(inference_model, "operators")
    added = _per_step(_hard_gate_three_classes(inference_model), "operators") - plain
    calls = 16
    assert 3 * calls + 2 < added <= 18 * calls + 2, (plain, added)
