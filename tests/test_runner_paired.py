"""Paired statistics of a study: bootstrap intervals, Wilcoxon signed-rank, Holm, effect sizes, tables and figure."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from cxr_pack.cxr_runner.cli import main
from cxr_pack.cxr_runner.paired import bootstrap_ci, compare, holm, summarize, wilcoxon
from PIL import Image


def _lines(
    values: list[float | str], metric: str = "ssim_outside", status: str = "ok"
) -> list[dict[str, str]]:
    return [{"status": status, "row.image": f"film{i}.png", "row.seed": str(i), "image_index": "0",
             f"metric.{metric}": str(v)} for i, v in enumerate(values)]  # fmt: skip


def test_wilcoxon_matches_exact_and_textbook_values() -> None:
    w, p, r = wilcoxon(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert (w, r) == (0.0, 1.0) and p == pytest.approx(2 / 32), "all 5 positive: exact two-sided p = 2/2^5"
    w, p, r = wilcoxon(np.array([-0.5, -1.5, -2.5, -3.5, -4.5, -5.5]))
    assert (w, r) == (0.0, -1.0) and p == pytest.approx(2 / 64)
    # Wilcoxon's blood-pressure style example (9 nonzero pairs, one tie): R+ = 27, R- = 18
    before = np.array([125, 115, 130, 140, 140, 115, 140, 125, 140, 135], dtype=float)
    after = np.array([110, 122, 125, 120, 140, 124, 123, 137, 135, 145], dtype=float)
    w, p, r = wilcoxon(before - after)
    assert w == 18.0 and r == pytest.approx((27 - 18) / 45)
    z = (18 - 9 * 10 / 4) / math.sqrt(
        9 * 10 * 19 / 24 - (2**3 - 2) / 48
    )  # normal approximation with tie term
    assert p == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), abs=0.05), "exact or normal, close to 0.59"
    assert wilcoxon(np.zeros(4)) is None, "no nonzero difference, no test"


def test_holm_step_down() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.6]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert holm([]) == []


def test_bootstrap_interval_is_seeded_and_has_the_right_width() -> None:
    values = np.random.default_rng(3).normal(0.8, 0.1, 400)
    ci = bootstrap_ci(values, 4000, np.random.default_rng(0))
    assert ci == bootstrap_ci(values, 4000, np.random.default_rng(0))
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert ci[0] < values.mean() < ci[1]
    assert (ci[1] - ci[0]) / 2 == pytest.approx(half, rel=0.1), "close to the normal-theory interval"
    assert bootstrap_ci(np.array([0.5]), 100, np.random.default_rng(0)) is None
    s = summarize([0.5, 0.5, 0.5, math.inf], 200, 0)
    assert (s.mean, s.sd, s.ci_low, s.ci_high, s.n) == (0.5, 0.0, 0.5, 0.5, 3), "infinite values left out"


def test_variants_are_paired_by_row_and_tested_against_the_reference() -> None:
    full = _lines([0.90, 0.85, 0.88, 0.92, 0.87, 0.91, 0.89, 0.86])
    worse = _lines([0.70, 0.66, 0.71, 0.75, 0.69, 0.72, 0.68, 0.67])
    same = _lines([0.91, 0.84, 0.88, 0.93, 0.86, 0.91, 0.90, 0.85])
    part = _lines([0.80, "", 0.8, "inf"]) + _lines([0.1], status="failed")
    summaries, comps = compare({"full": full, "worse": worse, "same": same, "part": part}, "full",
                               ["ssim_outside"], n_boot=500)  # fmt: skip
    by = {c.variant: c for c in comps}
    assert list(by) == ["worse", "same", "part"], "the reference is not tested against itself"
    assert by["worse"].n_pairs == 8 and by["worse"].mean_diff == pytest.approx(-0.1875)
    assert by["worse"].p == pytest.approx(2 / 256) and by["worse"].rank_biserial == -1.0
    assert by["worse"].ci_high < 0, "the whole interval below zero"
    assert by["same"].p > 0.5 and by["same"].ci_low < 0 < by["same"].ci_high
    assert by["part"].n_pairs == 2, "only rows both have, with finite values, and ok"
    ps = [by[v].p for v in ("worse", "same", "part")]
    assert [by[v].p_holm for v in ("worse", "same", "part")] == pytest.approx(holm(ps))
    assert summaries["part"]["ssim_outside"].n == 2 and summaries["full"]["ssim_outside"].n == 8
    with pytest.raises(KeyError, match="reference variant 'nope' is not among the results"):
        compare({"full": full}, "nope", ["ssim_outside"])


def _results(folder: Path, values: list[float]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = _lines(values)
    with (folder / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["row_index", *rows[0]])
        w.writeheader()
        w.writerows({"row_index": i, **r} for i, r in enumerate(rows))
    return folder


def test_report_command_writes_paired_tables_figure_and_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    _results(run / "full", [0.90, 0.85, 0.88, 0.92, 0.87, 0.91])
    _results(run / "no_gate", [0.70, 0.66, 0.71, 0.75, 0.69, 0.72])
    assert main(["report", str(run), "--pictures", "0", "--boot", "300"]) == 0
    said = capsys.readouterr().out
    assert "## Paired against 'full' (same rows and images)" in said and "report.html" in said
    md = (run / "study.md").read_text()
    assert "| ssim_outside | no_gate | 6 | -0.1833 [" in md and "| 0.0312 | 0.0312 * | -1.000 |" in md
    with (run / "paired.csv").open() as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    assert float(rows["no_gate"]["p"]) == pytest.approx(2 / 64) and rows["full"]["p"] == ""
    assert float(rows["full"]["ci_low"]) < 0.88833 < float(rows["full"]["ci_high"])
    with Image.open(run / "paired.png") as im:
        assert im.format == "PNG" and im.width >= 300
    page = (run / "report.html").read_text()
    assert "<table>" in page and "<img src='paired.png'" in page and "<b>" in page
    assert main(["report", str(run), "--reference", "nope"]) == 2
    assert "--reference 'nope' is not a variant folder" in capsys.readouterr().err


def test_float32_noise_is_a_tie_not_a_difference() -> None:
    values = [0.90, 0.85, 0.88, 0.92, 0.87, 0.91, 0.89, 0.86]
    noisy = _lines([v + 3e-9 * (1 + i % 2) for i, v in enumerate(values)])
    _, (c,) = compare({"full": _lines(values), "noisy": noisy}, "full", ["ssim_outside"], n_boot=100)
    assert (c.n_pairs, c.p, c.statistic, c.rank_biserial) == (8, None, None, None)
    _, (d,) = compare({"full": _lines(values), "up": _lines([v + 1e-4 for v in values])}, "full", ["ssim_outside"],
                      n_boot=100)  # fmt: skip
    assert d.p == pytest.approx(2 / 256), "a real (if small) shift is still tested"


def test_report_command_errors_name_the_folder_and_what_it_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder; expected a study's --out folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no <variant>/results.csv under" in capsys.readouterr().err
    _results(tmp_path / "only", [0.5, 0.6])
    assert main(["report", str(tmp_path), "--pictures", "0"]) == 0, "one variant: its table, no paired tests"
    assert not (tmp_path / "paired.md").exists() and "| only | 2 |" in (tmp_path / "study.md").read_text()


def test_paired_statistics_per_design_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    full = [0.90, 0.85, 0.88, 0.92, 0.87, 0.91, 0.89, 0.86]
    for name, values in (("full", full), ("no_gate", [v - 0.1 - 0.01 * i for i, v in enumerate(full)])):
        folder = run / name
        folder.mkdir(parents=True)
        rows = _lines(values)
        for i, row in enumerate(rows):
            row["row.pathology"] = ("effusion", "cardiomegaly")[i % 2]
        with (folder / "results.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    assert main(["report", str(run), "--pictures", "0", "--boot", "200", "--by", "pathology"]) == 0
    with (run / "paired_by_pathology.csv").open() as fh:
        got = {(r["level"], r["variant"]): r for r in csv.DictReader(fh)}
    assert set(got) == {(lvl, v) for lvl in ("effusion", "cardiomegaly") for v in ("full", "no_gate")}
    effusion = got[("effusion", "no_gate")]
    assert effusion["n_pairs"] == "4" and float(effusion["p"]) == pytest.approx(2 / 16)
    assert float(effusion["mean_diff"]) == pytest.approx(-0.1 - 0.01 * (0 + 2 + 4 + 6) / 4)
    md = (run / "paired_by_pathology.md").read_text()
    assert md.startswith("# Paired statistics by pathology\n\n## pathology = effusion\n\n### Per variant")
    assert "paired_by_pathology.csv" in capsys.readouterr().out
    assert main(["report", str(run), "--pictures", "0", "--by", "zone"]) == 2
    assert "--by zone: the results have no manifest column 'zone' (they have image, pathology, seed)" in (
        capsys.readouterr().err
    )
