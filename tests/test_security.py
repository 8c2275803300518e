"""Security assertions (issue 16, Deliver 4): no unpickling, files stay in input/ and output/, no network."""

from __future__ import annotations

import ast
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cxr_input_helpers import label_map, synthetic_chest
from cxr_pack.cxr_core.demo_assets import demo_radiograph_path
from cxr_pack.cxr_core.input_paths import InputPathError, shown_path
from cxr_pack.cxr_core.metrics.locking import safe_output_path
from cxr_pack.nodes.anatomy_gate import AnatomyAttentionGate
from cxr_pack.nodes.metrics import CXRMetrics
from cxr_pack.nodes.organ_mask_loader import OrganMaskLoader
from cxr_pack.nodes.radiograph_loader import CXRImageLoader
from cxr_pack.nodes.spatial_prior import PathologySpatialPrior
from helpers import comfy_folders, random_cond, sample

REPO = Path(__file__).resolve().parents[1]
PACK_SOURCES = sorted(p for d in ("nodes", "cxr_core", "cxr_runner") for p in (REPO / d).rglob("*.py"))
RUNTIME_SOURCES = [p for p in PACK_SOURCES if "cxr_runner" not in p.parts]  # what runs inside ComfyUI
H, W = 120, 100


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _kw(call: ast.Call, name: str):
    return next((ast.literal_eval(k.value) for k in call.keywords if k.arg == name), None)


# ---- no pickle, no unrestricted torch.load ------------------------------------------------------
def test_no_source_file_unpickles() -> None:
    bad = []
    for path in PACK_SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = getattr(node, "module", None) or ""
            if {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve"} & {*names, module.split(".")[0]}:
                bad.append(f"{path.name}: imports {names or module}")
        for call, func in _calls(path):
            if func.endswith("torch.load") and _kw(call, "weights_only") is not True:
                bad.append(f"{path.name}:{call.lineno}: torch.load without weights_only=True")
            if func in ("np.load", "numpy.load") and _kw(call, "allow_pickle") is not False:
                bad.append(f"{path.name}:{call.lineno}: np.load without allow_pickle=False")
            if func in ("torch.jit.load", "yaml.load", "yaml.unsafe_load", "eval", "exec"):
                bad.append(f"{path.name}:{call.lineno}: {func}")
    assert bad == []
    assert len(PACK_SOURCES) > 50


ROUTES_MODULE = REPO / "nodes" / "editor_routes.py"  # the editor's two routes (issue 10), validated there


def test_the_pack_adds_only_the_editor_routes() -> None:
    for path in RUNTIME_SOURCES:
        if path == ROUTES_MODULE:
            continue
        text = path.read_text()
        assert "PromptServer" not in text and "add_route" not in text and ".routes" not in text, path.name
    from aiohttp import web
    from cxr_pack.nodes.editor_routes import add_routes

    table = web.RouteTableDef()
    add_routes(table)
    assert sorted((r.method, r.path) for r in table) == [
        ("GET", "/cxr_counterfactual/radiograph_preview"),
        ("POST", "/cxr_counterfactual/tokens"),
    ]
    init = (REPO / "__init__.py").read_text()
    assert "add_route" not in init and ".routes" not in init


# ---- every file input, and every file in a folder input, resolves inside input/ -----------------
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the input folder with valid files that a workflow must not reach."""
    out = tmp_path / "outside"
    (out / "case").mkdir(parents=True)
    organs = synthetic_chest(H, W)
    cv2.imwrite(str(out / "labels.png"), label_map(organs, {"right_lung": 1, "left_lung": 2, "heart": 3}))
    (out / "labels.json").write_text('{"1": "right lung", "2": "left lung", "3": "heart"}')
    for name in ("right_lung", "left_lung"):
        cv2.imwrite(str(out / "case" / f"{name}.png"), organs[name].astype(np.uint8) * 255)
    np.savez(out / "m.npz", left_lung=organs["left_lung"], right_lung=organs["right_lung"])
    shutil.copy(demo_radiograph_path(), out / "film.dcm")
    return out


def _file_inputs(outside: Path) -> dict[str, tuple]:
    """Each file input: (how to call the node with a name, the outside file that name should reach)."""
    return {
        "CXRImageLoader.image": (lambda n: CXRImageLoader.execute(n, working_size=64), "film.dcm"),
        "OrganMaskLoader.path (label_map)": (
            lambda n: OrganMaskLoader.execute(source="label_map", path=n, legend="chexmask"), "labels.png"),
        "OrganMaskLoader.path (npz)": (lambda n: OrganMaskLoader.execute(source="npz", path=n), "m.npz"),
        "OrganMaskLoader.path (mask_folder)": (
            lambda n: OrganMaskLoader.execute(source="mask_folder", path=n), "case"),
        "OrganMaskLoader.legend_json": (
            lambda n: OrganMaskLoader.execute(source="label_map", path="inside.png", legend="json", legend_json=n),
            "labels.json"),
    }  # fmt: skip


@pytest.mark.parametrize("trick", ["dotdot", "absolute", "symlink", "symlinked_folder"])
def test_every_file_input_stays_inside_the_input_folder(tmp_path: Path, outside: Path, trick: str) -> None:
    inp = tmp_path / "input"
    with comfy_folders(input=inp):
        shutil.copy(outside / "labels.png", inp / "inside.png")
        os.symlink(outside, inp / "linkdir")
        for label, (call, target) in _file_inputs(outside).items():
            name = {"dotdot": f"../outside/{target}", "absolute": str(outside / target),
                    "symlink": f"link_{target}", "symlinked_folder": f"linkdir/{target}"}[trick]  # fmt: skip
            if trick == "symlink":
                os.symlink(outside / target, inp / name)
            with pytest.raises(InputPathError) as err:
                call(name)
            assert str(tmp_path) not in str(err.value).replace(name, ""), label


def test_every_file_inside_a_folder_input_and_the_auto_sidecar_stays_inside(
    tmp_path: Path, outside: Path
) -> None:
    inp = tmp_path / "input"
    with comfy_folders(input=inp):
        (inp / "case").mkdir()
        shutil.copy(outside / "case" / "right_lung.png", inp / "case" / "right_lung.png")
        os.symlink(outside / "case" / "left_lung.png", inp / "case" / "left_lung.png")
        with pytest.raises(InputPathError, match="'case/left_lung.png' resolves outside"):
            OrganMaskLoader.execute(source="mask_folder", path="case")
        shutil.copy(outside / "labels.png", inp / "labels.png")
        os.symlink(outside / "labels.json", inp / "labels.json")
        with pytest.raises(InputPathError, match="legend sidecar: 'labels.json' resolves outside"):
            OrganMaskLoader.execute(source="label_map", path="labels.png", legend="auto")


# ---- outputs and CSV names resolve inside output/ ---------------------------------------------
@pytest.mark.parametrize("name", ["../escape.csv", "/tmp/escape.csv", "a/../../escape.csv", "link/escape.csv",
                                  "C:\\escape.csv", "a\x00.csv"])  # fmt: skip
def test_csv_names_stay_inside_the_output_folder(tmp_path: Path, name: str) -> None:
    out = tmp_path / "output"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", out / "link")
    with pytest.raises(ValueError, match="csv_name") as err:
        safe_output_path(out, name, "csv_name", ".csv")
    assert str(tmp_path) not in str(err.value)
    assert list((tmp_path / "elsewhere").iterdir()) == [] and not (tmp_path / "escape.csv").exists()


def test_metrics_node_refuses_an_escaping_csv_name_before_writing(tmp_path: Path) -> None:
    with comfy_folders(output=tmp_path / "output"):
        img = torch.rand(1, 32, 32, 3)
        with pytest.raises(ValueError, match="csv_name"):
            CXRMetrics.execute(img, img, torch.ones(1, 32, 32), csv_name="../../escape.csv")
        assert not any(p.suffix == ".csv" for p in tmp_path.rglob("*"))


def test_shown_paths_hide_the_servers_layout(tmp_path: Path) -> None:
    assert shown_path(tmp_path / "a" / "b") == ".../a/b"
    assert shown_path(Path.home() / "x" / "y") == "~/x/y"


# ---- no network access at run time --------------------------------------------------------------
_NET_EVENTS = (
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "urllib.Request",
    "http.client.connect",
)
_seen: list[tuple] = []
_watching = [False]


def _audit(event: str, args: tuple) -> None:
    if _watching[0] and event in _NET_EVENTS:
        _seen.append((event, args))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one records only while _watching is set


def test_a_whole_counterfactual_pipeline_opens_no_network_connection(tmp_path: Path, tiny_model) -> None:
    inp = tmp_path / "input"
    with comfy_folders(input=inp, output=tmp_path / "output"):
        shutil.copy(demo_radiograph_path(), inp / "film.dcm")
        organs = synthetic_chest(1955, 1841)
        cv2.imwrite(str(inp / "labels.png"), label_map(organs, {"right_lung": 1, "left_lung": 2, "heart": 3}))
        _watching[0] = True
        try:
            image, geometry, _ = CXRImageLoader.execute("film.dcm", working_size=128).result
            om = OrganMaskLoader.execute(source="label_map", path="labels.png", legend="chexmask",
                                         geometry=geometry, image=image).result[0]  # fmt: skip
            prior = PathologySpatialPrior.execute(om, "effusion", "left", 0.35, 4.0).result[0]
            model = AnatomyAttentionGate.execute(
                tiny_model, om, organs="all", strength=4.0, hard=False, tau=0.5, sites="64,32",
                start_percent=0.0, end_percent=1.0, background="free", enabled=True,
            ).result[0]  # fmt: skip
            latent = sample(model, random_cond(1), random_cond(2), steps=2, latent_hw=(16, 16))
            fake = image.clone()
            fake[0, :, :, :] = (fake[0] + 0.1 * prior[0, :, :, None] * torch.rand_like(fake[0])).clamp(0, 1)
            CXRMetrics.execute(image, fake, prior, run_tag="net", csv_name="net/metrics.csv")
        finally:
            _watching[0] = False
    assert torch.isfinite(latent).all()
    assert _seen == [], f"network calls at run time: {_seen[:5]}"
    # the hook does see a connection when one is made
    import socket

    _watching[0] = True
    try:
        with socket.socket() as s:
            s.settimeout(0.2)
            s.connect_ex(("127.0.0.1", 9))
    finally:
        _watching[0] = False
    assert [e for e, _ in _seen] == ["socket.connect"]
    _seen.clear()
