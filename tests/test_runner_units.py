"""The headless runner without a server: overrides, manifests, shards, row keys, results, formats, errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cxr_pack.cxr_runner.cli import main
from cxr_pack.cxr_runner.errors import RunnerError
from cxr_pack.cxr_runner.jobs import Job, _prepare, check_job, collect_metrics
from cxr_pack.cxr_runner.manifest import (
    load_mapping,
    parse_mapping,
    parse_shard,
    read_manifest,
    row_key,
    row_overrides,
    shard_rows,
)
from cxr_pack.cxr_runner.overrides import Target, apply_overrides, parse_override, parse_target
from cxr_pack.cxr_runner.progress import ProgressBar, PromptEvents
from cxr_pack.cxr_runner.results import ResultStore, csv_lines
from cxr_pack.cxr_runner.workflow_format import WorkflowFormatError
from cxr_pack.cxr_runner.workflow_io import read_workflow, to_api
from runner_helpers import runner_workflow

REPO = Path(__file__).resolve().parents[1]


def test_overrides_by_title_or_id_with_json_values() -> None:
    wf = runner_workflow("x.safetensors")
    out = apply_overrides(
        wf,
        [
            parse_override("Sampler.steps=7"),
            parse_override("Sampler.cfg=2.5"),
            parse_override("Positive prompt.text=a (b:1.2), c=d"),
            parse_override("4.width=96"),
            parse_override('Save.filename_prefix="007"'),
        ],
    )
    ks = out["5"]["inputs"]
    assert (ks["steps"], ks["cfg"]) == (7, 2.5) and isinstance(ks["steps"], int)
    assert out["2"]["inputs"]["text"] == "a (b:1.2), c=d", "the value is everything after the first '='"
    assert out["4"]["inputs"]["width"] == 96, "a node id addresses an untitled node"
    assert out["7"]["inputs"]["filename_prefix"] == "007", "quoted JSON stays a string"
    assert wf["5"]["inputs"]["steps"] == 1, "the workflow given is not changed"
    assert parse_target("Mask v1.2.threshold") == Target("Mask v1.2", "threshold"), "titles may contain dots"


def test_override_errors_name_what_is_valid() -> None:
    wf = runner_workflow("x.safetensors")
    with pytest.raises(
        WorkflowFormatError, match=r"no node titled or numbered 'Sampler2'.*'Sampler' \(id 5\)"
    ):
        apply_overrides(wf, [parse_override("Sampler2.steps=1")])
    with pytest.raises(
        WorkflowFormatError, match=r"has no input 'stepz'; its value inputs: seed, steps, cfg"
    ):
        apply_overrides(wf, [parse_override("Sampler.stepz=1")])
    with pytest.raises(WorkflowFormatError, match="is a link from another node"):
        apply_overrides(wf, [parse_override("Sampler.model=1")])
    for bad in ("Sampler.steps", "steps=3", ".steps=3"):
        with pytest.raises(WorkflowFormatError, match="expected 'Node title"):
            parse_override(bad)


def test_shards_partition_rows_stably() -> None:
    rows = [{"seed": str(i)} for i in range(11)]
    for n in (1, 2, 3, 4):
        parts = [shard_rows(rows, parse_shard(f"{i}/{n}")) for i in range(n)]
        indices = [k for p in parts for k, _ in p]
        assert sorted(indices) == list(range(11)) and len(set(indices)) == 11, f"{n} shards: a partition"
        assert all(k % n == i for i, p in enumerate(parts) for k, _ in p)
    assert shard_rows(rows, (1, 3)) == shard_rows([dict(r) for r in rows], (1, 3)), "stable across calls"
    for bad, msg in (("3/3", "0 <= i < n"), ("-1/2", "0 <= i < n"), ("1/0", "0 <= i < n"), ("a/b", "i/n")):
        with pytest.raises(RunnerError, match=msg):
            parse_shard(bad)


def test_row_keys_hash_the_cells_and_the_recipe_not_the_position() -> None:
    recipe = {"workflow": {"1": {"class_type": "X", "inputs": {}}}, "map": {"seed": ["Sampler.seed"]}}
    a = row_key({"seed": "1", "side": "left"}, recipe)
    assert a == row_key({"side": "left", "seed": "1"}, json.loads(json.dumps(recipe))), (
        "order of keys is irrelevant"
    )
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != row_key({"seed": "2", "side": "left"}, recipe), "another cell"
    assert a != row_key({"seed": "1", "side": "left"}, {**recipe, "set": [["Sampler.steps", 3]]}), (
        "another recipe"
    )
    wf2 = {"1": {"class_type": "Y", "inputs": {}}}
    assert a != row_key({"seed": "1", "side": "left"}, {**recipe, "workflow": wf2}), "another workflow"


def test_row_key_follows_the_content_of_uploaded_files(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    img.write_bytes(b"one")
    job = Job(workflow=runner_workflow("x"), out_dir=tmp_path, servers=[], mapping=parse_mapping(["image=Save.filename_prefix"]),
              base_dirs=[tmp_path])  # fmt: skip
    (first,) = _prepare(job, [{"image": "a.png"}])
    assert list(first.files) == ["image"] and first.files["image"][0] == img.resolve()
    img.write_bytes(b"two")
    (second,) = _prepare(job, [{"image": "a.png"}])
    assert first.key != second.key, "a changed file is new work"
    (named,) = _prepare(job, [{"image": "not_here.png"}])
    assert named.files == {}, "a name that is not a local file is passed to the server as it is"


def test_mapping_flags_sidecar_and_errors(tmp_path: Path) -> None:
    m = parse_mapping(["text=Positive prompt.text", "text=Pathology reweight.text", "seed=Sampler.seed"])
    assert m == {"text": [Target("Positive prompt", "text"), Target("Pathology reweight", "text")],
                 "seed": [Target("Sampler", "seed")]}  # fmt: skip
    manifest = tmp_path / "rows.csv"
    manifest.write_text("seed\n1\n")
    (tmp_path / "rows.map.json").write_text(
        json.dumps({"seed": "Sampler.seed", "text": ["A.text", "B.text"]})
    )
    assert load_mapping([], None, manifest) == {"seed": [Target("Sampler", "seed")],
                                                "text": [Target("A", "text"), Target("B", "text")]}  # fmt: skip
    assert load_mapping(["seed=KS.seed"], None, manifest) == {"seed": [Target("KS", "seed")]}, "flags win"
    with pytest.raises(RunnerError, match="expected column=Node title.input"):
        parse_mapping(["seed"])
    with pytest.raises(RunnerError, match="does not exist"):
        load_mapping([], tmp_path / "nope.json", None)
    (tmp_path / "bad.json").write_text(json.dumps({"seed": 3}))
    with pytest.raises(RunnerError, match="column 'seed' must map to 'Node title.input'"):
        load_mapping([], tmp_path / "bad.json", None)


def test_manifest_reading_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        "\ufeffimage,masks,pathology,side,extent,seed,note\n a.png ,m.png,effusion,left,0.35,1,x\n"
    )
    rows = read_manifest(path, parse_mapping(["seed=Sampler.seed"]))
    assert rows == [{"image": "a.png", "masks": "m.png", "pathology": "effusion", "side": "left", "extent": "0.35",
                     "seed": "1", "note": "x"}], "BOM and spaces are stripped; other columns are kept"  # fmt: skip
    with pytest.raises(RunnerError, match=r"mapped columns \['sed'\] are not in its header \['image'"):
        read_manifest(path, parse_mapping(["sed=Sampler.seed"]))
    path.write_text("seed,side\n1,left\n2\n")
    with pytest.raises(RunnerError, match="line 3: expected 2 cells"):
        read_manifest(path, {})
    path.write_text("seed,seed\n1,2\n")
    with pytest.raises(RunnerError, match="unique"):
        read_manifest(path, {})
    with pytest.raises(RunnerError, match="does not exist"):
        read_manifest(tmp_path / "missing.csv", {})
    mapping = parse_mapping(["seed=Sampler.seed", "side=Prior.side"])
    overrides = row_overrides({"seed": "5", "side": ""}, mapping, {"seed": 5, "side": ""})
    assert [(str(o.target), o.value) for o in overrides] == [("Sampler.seed", 5)], (
        "an empty cell keeps the default"
    )


def test_job_targets_are_checked_before_anything_runs(tmp_path: Path) -> None:
    job = Job(
        workflow=runner_workflow("x"),
        out_dir=tmp_path,
        servers=[],
        mapping=parse_mapping(["seed=Sampler.sed"]),
    )
    with pytest.raises(RunnerError, match="has no input 'sed'"):
        check_job(job)


def test_results_store_latest_and_csv_lines_per_image(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    base = {
        "run_id": "r",
        "row": {"seed": "1"},
        "server": "s",
        "prompt_id": "p",
        "error": "",
        "outputs": ["k/a.png"],
    }
    store.append(
        {**base, "row_key": "k1", "row_index": 0, "status": "failed", "attempts": 2, "error": "boom"}
    )
    store.append({**base, "row_key": "k1", "row_index": 0, "status": "ok", "attempts": 1,
                  "metrics": [{"node": "9", "record": {"ssim_global": 0.5, "image_index": 0, "ssim_organs": {"heart": 0.9}}},
                              {"node": "9", "record": {"ssim_global": 0.7, "image_index": 1}}]})  # fmt: skip
    store.append(
        {**base, "row_key": "k1", "row_index": 0, "status": "failed", "attempts": 2, "error": "late"}
    )
    store.append({**base, "row_key": "k2", "row_index": 1, "status": "failed", "attempts": 2, "error": "x"})
    assert store.finished() == {"k1"}, "an ok row stays ok; failed rows are not finished"
    with store.jsonl.open("a") as fh:
        fh.write('{"cut short')  # a process killed mid-line
    assert store.latest()["k2"]["error"] == "x"
    with store.write_csv().open() as fh:
        lines = list(csv.DictReader(fh))
    assert [(r["row_key"], r["image_index"], r["metric.ssim_global"]) for r in lines] == [
        ("k1", "0", "0.5"), ("k1", "1", "0.7"), ("k2", "", "")]  # fmt: skip
    assert lines[0]["metric.ssim_organs.heart"] == "0.9" and lines[0]["row.seed"] == "1"
    assert lines[0]["metrics_node"] == "9" and lines[0]["outputs"] == "k/a.png"
    assert not list(tmp_path.glob(".results-*")), "no temporary file left behind"
    assert csv_lines({"row_key": "z", "row": {}})[0]["outputs"] == ""


def test_metrics_are_collected_from_every_output_node() -> None:
    entry = {"outputs": {"12": {"cxr_metrics": [{"ssim_global": 0.2}]}, "9": {"images": [], "cxr_metrics": [
        {"ssim_global": 0.9}, {"ssim_global": 0.8}]}, "3": {"text": ["x"]}}}  # fmt: skip
    assert collect_metrics(entry) == [{"node": "9", "record": {"ssim_global": 0.9}},
                                      {"node": "9", "record": {"ssim_global": 0.8}},
                                      {"node": "12", "record": {"ssim_global": 0.2}}]  # fmt: skip


def _ui_graph(primitive: bool = False) -> dict:
    nodes = [
        {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
         "widgets_values": [64, 32, 1, 0]},
        {"id": 2, "type": "SaveImage", "mode": 0, "title": "Save", "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
         "outputs": [], "widgets_values": ["ui_twin"]},
    ]  # fmt: skip
    links = [[1, 1, 0, 2, 0, "IMAGE"]]
    if primitive:
        nodes.append(
            {"id": 3, "type": "PrimitiveNode", "mode": 0, "outputs": [{"type": "INT", "links": [2]}]}
        )
        nodes[0]["inputs"] = [{"name": "width", "type": "INT", "link": 2, "widget": {"name": "width"}}]
        links.append([2, 3, 0, 1, 0, "INT"])
    return {"nodes": nodes, "links": links}


OBJECT_INFO = {
    "EmptyImage": {"display_name": "EmptyImage", "input": {"required": {"width": ["INT", {}], "height": ["INT", {}],
                   "batch_size": ["INT", {}], "color": ["INT", {}]}}, "input_order": {"required": ["width", "height", "batch_size", "color"]}},
    "SaveImage": {"display_name": "Save Image", "input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {}]}},
                  "input_order": {"required": ["images", "filename_prefix"]}},
}  # fmt: skip


def test_ui_workflows_convert_when_exact_and_are_refused_otherwise(tmp_path: Path) -> None:
    api = to_api(_ui_graph(), OBJECT_INFO)
    assert api == {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 1, "color": 0},
              "_meta": {"title": "EmptyImage"}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ui_twin", "images": ["1", 0]},
              "_meta": {"title": "Save"}},
    }  # fmt: skip
    with pytest.raises(
        WorkflowFormatError, match=r"PrimitiveNode\) feeds another node's input.*Export \(API\)"
    ):
        to_api(_ui_graph(primitive=True), OBJECT_INFO)
    with pytest.raises(WorkflowFormatError, match="no server is known to convert it"):
        to_api(_ui_graph(), None)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(WorkflowFormatError, match="is not JSON"):
        read_workflow(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"prompt": {"1": {}}}))
    with pytest.raises(WorkflowFormatError, match="expected ComfyUI's API format"):
        read_workflow(tmp_path / "y.json")


def test_progress_bar_draws_rows_nodes_and_steps() -> None:
    stream = io.StringIO()
    bar = ProgressBar(total_rows=2, show=True, stream=stream)
    events = PromptEvents(runner_workflow("x"), bar, "row 0")
    events("execution_cached", {"nodes": ["1", "2", "3", "4"], "prompt_id": "p"})
    events("progress", {"node": "5", "value": 1, "max": 2, "prompt_id": "p"})
    assert "0/2 rows" in stream.getvalue() and "row 0: node 4/7 Sampler 1/2" in stream.getvalue()
    bar.row_done(ok=False)
    bar.close()
    assert "1/2 rows, 1 failed" in stream.getvalue() and stream.getvalue().endswith("\n")
    quiet = io.StringIO()
    ProgressBar(total_rows=1, stream=quiet).row_done(ok=True)  # StringIO is not a terminal
    assert quiet.getvalue() == ""


def test_cli_errors_name_the_expected_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(runner_workflow("x")))
    (tmp_path / "rows.csv").write_text("seed\n1\n")
    cases = [
        (["run", str(tmp_path / "missing.json")], "missing.json does not exist"),
        (["run", str(wf), "--set", "Sampler.sed=1"], "has no input 'sed'"),
        (["manifest", str(wf), str(tmp_path / "rows.csv")], "no mapping from rows.csv's columns"),
        (["manifest", str(wf), str(tmp_path / "rows.csv"), "--map", "sead=Sampler.seed"], "not in its header ['seed']"),
        (["manifest", str(wf), str(tmp_path / "rows.csv"), "--map", "seed=Sampler.seed", "--shard", "2/2"], "0 <= i < n"),
        (["run", str(wf), "--server", "http://127.0.0.1:9"], "cannot reach ComfyUI at http://127.0.0.1:9"),
        (["study", "--variant", "a=" + str(wf)], "no manifest"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_runner_never_imports_comfyui_or_torch() -> None:
    code = ("import sys, cxr_runner.cli, cxr_runner.study; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'comfy', 'folder_paths', 'nodes', 'numpy')); "
            "print(bad); sys.exit(1 if bad else 0)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_start_server_runs_on_the_cpu_unless_gpu_is_given(tmp_path: Path) -> None:
    from cxr_pack.cxr_runner.cli import build_parser, local_server

    base = ["run", "wf.json", "--start-server", "--server-arg=--lowvram"]
    cpu = local_server(build_parser().parse_args(base), tmp_path)
    gpu = local_server(build_parser().parse_args([*base, "--gpu"]), tmp_path)
    assert cpu.cpu is True and gpu.cpu is False
    assert gpu.extra_args == ["--lowvram"] and gpu.comfyui_dir == tmp_path
