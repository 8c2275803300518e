"""Manifest builders on tiny synthetic datasets in the MIMIC-CXR-JPG, CheXpert and NIH layouts, with CheXmask."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from cxr_pack.cxr_core.chexmask import read_chexmask
from cxr_pack.cxr_runner.cli import main
from cxr_pack.cxr_runner.datasets.chexmask import rle_problem
from cxr_pack.cxr_runner.datasets.command import build_study_folder
from cxr_pack.cxr_runner.datasets.design import cells
from cxr_pack.cxr_runner.errors import RunnerError
from cxr_pack.cxr_runner.manifest import load_mapping, read_manifest
from cxr_pack.cxr_runner.overrides import check_target
from cxr_pack.cxr_runner.study import load_study
from cxr_pack.cxr_runner.workflow_format import node_ids
from cxr_pack.cxr_runner.workflow_io import read_workflow
from dataset_helpers import encode_rle, make_chexpert, make_mimic, make_nih, organ_masks

DESIGN = {"pathologies": ["effusion", "cardiomegaly"], "sides": ["left", "right"], "extents": [0.2, 0.5]}


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_mimic_layout_gives_healthy_pa_films_with_good_masks_in_a_balanced_design(tmp_path: Path) -> None:
    root, chexmask = make_mimic(tmp_path / "mimic-cxr-jpg" / "2.1.0")
    summary = build_study_folder("mimic-cxr-jpg", root, chexmask, tmp_path / "study", seed=7, **DESIGN)
    assert (summary["healthy_films"], summary["films_with_masks"], summary["rows"]) == (18, 12, 8), (
        "per patient 6 healthy PA films, of which the low-quality and the mask-less one have no usable masks; "
        "the finding, uncertain, device, lateral and AP films are not candidates"
    )
    rows = _rows(tmp_path / "study")
    assert Counter((r["pathology"], r["side"], r["extent"]) for r in rows) == Counter({
        ("effusion", "left", "0.2"): 1, ("effusion", "right", "0.2"): 1, ("effusion", "left", "0.5"): 1,
        ("effusion", "right", "0.5"): 1, ("cardiomegaly", "bilateral", "0.2"): 2, ("cardiomegaly", "bilateral", "0.5"): 2,
    }), "each pathology 4 rows; sided cells one each, cardiomegaly's single side level takes both"  # fmt: skip
    assert len({r["image"] for r in rows}) == 8, "a film is used once"
    assert all(Path(r["image"]).is_file() and "/files/p1" in r["image"] and r["view"] == "PA" for r in rows)
    assert Counter(r["patient"] for r in rows).most_common(1)[0][1] <= 3, "films spread over the 3 patients"
    left = next(r for r in rows if r["side"] == "left")
    assert (
        left["prompt"] == "chest x-ray, PA view, left pleural effusion"
        and left["target_organs"] == "left_lung"
    )
    cardio = next(r for r in rows if r["pathology"] == "cardiomegaly")
    assert cardio["prompt"] == "chest x-ray, PA view, cardiomegaly" and cardio["target_organs"] == "heart"
    # the one-row mask CSV is read by the pack's own CheXmask reader, exactly the drawn lungs and heart
    raw = read_chexmask(tmp_path / "study" / left["masks"], left["mask_id"], 0.7)
    truth = organ_masks((int(left["patient"]) - 10_000_000) % 3)  # subject ids 1000000p
    assert set(raw.names) == {"left_lung", "right_lung", "heart"}
    for name, column in (("left_lung", "Left Lung"), ("right_lung", "Right Lung"), ("heart", "Heart")):
        assert np.array_equal(raw.masks[0, raw.names.index(name)] > 0, truth[column])
    # the design is seeded: the same seed repeats it, another seed draws another one
    build_study_folder("mimic-cxr-jpg", root, chexmask, tmp_path / "again", seed=7, **DESIGN)
    assert _rows(tmp_path / "again") == rows
    build_study_folder("mimic-cxr-jpg", root, chexmask, tmp_path / "other", seed=8, **DESIGN)
    assert _rows(tmp_path / "other") != rows
    design = json.loads((tmp_path / "study" / "design.json").read_text())
    assert design["seed"] == 7 and design["cells"]["cardiomegaly/bilateral/0.2"] == 2


def test_chexpert_layout_and_its_study_file_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    top, chexmask = make_chexpert(tmp_path / "data")
    out = tmp_path / "study"
    code = main(["dataset", "chexpert", str(top), "--chexmask", str(chexmask), "--out", str(out), "--pathologies",
                 "effusion,pneumothorax", "--extents", "0.3", "--per-cell", "2", "--min-quality", "0.8"])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.startswith(
        "8 rows drawn from the 12 of 18 healthy films that have CheXmask masks of Dice RCA >= 0.8; wrote"
    )
    rows = _rows(out)
    assert Counter((r["pathology"], r["side"]) for r in rows) == {("effusion", "left"): 2, ("effusion", "right"): 2,
                                                                 ("pneumothorax", "left"): 2, ("pneumothorax", "right"): 2}  # fmt: skip
    mask_csv = next(csv.DictReader((out / rows[0]["masks"]).open()))
    assert mask_csv["Path"].startswith("CheXpert-v1.0/train/"), (
        "matched across releases on the last four parts"
    )
    assert rows[0]["mask_id"] == mask_csv["Path"], "the id as the CheXmask row writes it, for the loader"
    study = json.loads((out / "study.json").read_text())
    mapping = load_mapping([], out / "manifest.map.json", None)
    assert read_manifest(out / "manifest.csv", mapping) == rows, "the map's columns are the manifest's"
    assert set(study["variants"]) >= {"full", "no gate", "no reweight", "no correction", "SDEdit", "PIE"}
    assert all(Path(v if isinstance(v, str) else v["workflow"]).is_file() for v in study["variants"].values())
    assert study["set"] == {"Organ masks.source": "chexmask_csv", "Organ masks.organs": "all",
                            "Organ masks.min_quality": 0.8}  # fmt: skip


def test_other_datasets_through_a_mapping_file(tmp_path: Path) -> None:
    mapping, chexmask = make_nih(tmp_path / "nih")
    summary = build_study_folder("mapped", mapping, chexmask, tmp_path / "study", pathologies=["effusion"],
                                 sides=["right"], extents=[0.4], per_cell=4)  # fmt: skip
    assert (summary["healthy_films"], summary["rows"]) == (4, 4), "films 1, 2, 4, 5 say No Finding"
    assert sorted(Path(r["image"]).name for r in _rows(tmp_path / "study")) == [
        f"0000{i:04d}_000.png" for i in (1, 2, 4, 5)]  # fmt: skip


def test_builder_errors_name_the_input_and_the_fix(tmp_path: Path) -> None:
    root, chexmask = make_mimic(tmp_path / "mimic", patients=1)
    with pytest.raises(RunnerError, match=r"the design needs 8 films but only 4 healthy films with CheXmask masks"
                       r" were found; lower --per-cell"):  # fmt: skip
        build_study_folder("mimic-cxr-jpg", root, chexmask, tmp_path / "s", **DESIGN)
    with pytest.raises(
        RunnerError, match=r"no label CSV in .*: expected one of mimic-cxr-2.0.0-chexpert.csv.gz"
    ):
        build_study_folder("mimic-cxr-jpg", tmp_path, chexmask, tmp_path / "s")
    (tmp_path / "bad.csv").write_text("dicom_id,Left Lung\nx,1 2\n")
    with pytest.raises(
        RunnerError, match=r"bad.csv is not a CheXmask OriginalResolution CSV.*missing \['Right Lung'"
    ):
        build_study_folder("mimic-cxr-jpg", root, tmp_path / "bad.csv", tmp_path / "s")
    with pytest.raises(RunnerError, match=r"--pathologies: \['fracture'\] unknown"):
        cells(["fracture"], ["left"], [0.5], 1)
    with pytest.raises(RunnerError, match=r"--extents: expected values in \(0, 1\]"):
        cells(["effusion"], ["left"], [1.5], 1)


def test_rle_checks_follow_the_chexmask_convention() -> None:
    mask = np.zeros((4, 5), bool)
    mask[1, 1:4] = True
    mask[2, 0] = True
    assert encode_rle(mask) == "7 3 11 1", "row-major, 1-based starts"
    assert rle_problem("7 3 11 1", 4, 5) == ""
    assert rle_problem("7 3 11", 4, 5) == "3 values, expected start/length pairs"
    assert rle_problem("19 5", 4, 5) == "run (19, 5) outside 1..20 or out of order"
    assert rle_problem("0 2", 4, 5).startswith("run (0, 2)")
    assert rle_problem("a b", 4, 5) == "not space-separated integers"


def test_a_film_on_several_reader_lines_is_healthy_only_if_every_reader_says_so(tmp_path: Path) -> None:
    mapping, chexmask = make_nih(tmp_path / "nih")
    data = tmp_path / "nih" / "Data_Entry_2017.csv"
    lines = data.read_text().splitlines()
    # a second reader: film 1 has a finding, film 2 is healthy again (VinDr-CXR lists one line per radiologist)
    data.write_text(
        "\n".join([*lines, "00000001_000.png,Nodule,1,PA", "00000002_000.png,No Finding,2,PA"]) + "\n"
    )
    summary = build_study_folder("mapped", mapping, chexmask, tmp_path / "study", pathologies=["effusion"],
                                 sides=["right"], extents=[0.4], per_cell=3)  # fmt: skip
    assert summary["healthy_films"] == 3
    assert sorted(Path(r["image"]).name for r in _rows(tmp_path / "study")) == [
        f"0000{i:04d}_000.png" for i in (2, 4, 5)]  # fmt: skip


def test_the_generated_study_fits_every_example_workflow(tmp_path: Path) -> None:
    """Each variant has the nodes that take the row's film, masks, prior and seed; the full method has them all."""
    top, chexmask = make_chexpert(tmp_path / "data")
    build_study_folder("chexpert", top, chexmask, tmp_path / "study", steps=12, **DESIGN)
    study = load_study(tmp_path / "study" / "study.json")
    essential = ("image", "masks", "mask_id", "pathology", "side", "extent", "seed")
    assert len(study.variants) == 7
    for variant in study.variants:
        api = read_workflow(variant.workflow)
        mapping = {**study.mapping, **variant.mapping}
        for column in essential:
            assert any(node_ids(api, t.node) for t in mapping[column]), (variant.name, column)
        targets = [t for c in essential for t in mapping[c] if node_ids(api, t.node)]
        targets += [o.target for o in [*study.overrides, *variant.overrides] if node_ids(api, o.target.node)]
        for target in targets:
            check_target(api, target)
        if variant.name == "full":
            for t in [t for ts in study.mapping.values() for t in ts] + [o.target for o in study.overrides]:
                check_target(api, t)
    pie = next(v for v in study.variants if v.name == "PIE")
    assert [(str(o.target), o.value) for o in pie.overrides] == [
        (f"Sampler round {k}.steps", 12) for k in (1, 2, 3)
    ]
