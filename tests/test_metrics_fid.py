"""FID: Frechet distance against closed forms and scipy, streaming statistics, extractors and the nodes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from cxr_pack.cxr_core.metrics.features import ExtractorInfo
from cxr_pack.cxr_core.metrics.fid import (
    FeatureStats,
    accumulate,
    fid_report,
    frechet_distance,
    load_stats,
    stats_path,
)
from helpers import comfy_folders
from metric_helpers import as_image, demo_radiograph, random_inception_file, tiny_clip_vision
from scipy import linalg

REPO = Path(__file__).resolve().parents[1]
WORKER_ENV = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))  # workers import the pack with import_pack
INFO = ExtractorInfo("test", "test features", "abc123", 8)


def _random_spd(d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.5 * np.eye(d)


def _eigh_reference(mu1, s1, mu2, s2) -> float:
    """An independent scipy formula: Tr (S1 S2)^(1/2) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))."""
    w, v = linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = linalg.eigvalsh(r1 @ s2 @ r1)
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(lam, 0, None)))
    )


def test_frechet_distance_equals_closed_form_for_diagonal_gaussians() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    a, b = rng.uniform(0.2, 3.0, 32), rng.uniform(0.2, 3.0, 32)
    closed = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(closed, rel=1e-6)


def test_frechet_distance_equals_closed_form_for_commuting_covariances() -> None:
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((24, 24)))
    a, b = rng.uniform(0.1, 2.0, 24), rng.uniform(0.1, 2.0, 24)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.standard_normal(24), rng.standard_normal(24)
    closed = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-6)


def test_frechet_distance_handles_singular_covariances() -> None:
    from cxr_pack.cxr_core.metrics.fid import _trace_sqrt_product_eigh

    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.2, 3.0, 32), rng.uniform(0.2, 3.0, 32)
    a[::2] = 0.0  # rank-deficient, as with fewer samples than dimensions
    closed = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(np.zeros(32), np.diag(a), np.zeros(32), np.diag(b)) == pytest.approx(
        closed, rel=1e-6
    )
    assert _trace_sqrt_product_eigh(np.diag(a), np.diag(b)) == pytest.approx(
        float(np.sum(np.sqrt(a * b))), rel=1e-9
    )


def test_frechet_distance_of_one_dimensional_gaussians() -> None:
    # d^2 = (m1 - m2)^2 + (sd1 - sd2)^2
    value = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[0.25]]))
    assert value == pytest.approx(9.0 + (2.0 - 0.5) ** 2, rel=1e-12)


@pytest.mark.parametrize("d", [16, 64])
def test_frechet_distance_matches_scipy_references(d: int) -> None:
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(d, 1), _random_spd(d, 2)
    ours = frechet_distance(
        torch.from_numpy(mu1), torch.from_numpy(s1), torch.from_numpy(mu2), torch.from_numpy(s2)
    )
    assert ours == pytest.approx(_eigh_reference(mu1, s1, mu2, s2), rel=1e-6)
    covmean = linalg.sqrtm(s1 @ s2).real  # the pytorch-fid formula, written out
    direct = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean))
    assert ours == pytest.approx(direct, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_streaming_merge_equals_one_pass_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(50, 8, generator=g, dtype=torch.float64) * 3 + 10
    merged = FeatureStats.from_features(feats[:7], INFO)
    for chunk in (feats[7:8], feats[8:30], feats[30:]):
        merged = merged.merge(FeatureStats.from_features(chunk, INFO))
    assert merged.n == 50
    assert torch.allclose(merged.mean, feats.mean(0), atol=1e-12)
    assert torch.allclose(merged.covariance(), torch.cov(feats.T), atol=1e-10)


def test_stats_persist_and_accumulate(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(12, 8, generator=g)
    path = stats_path(tmp_path, "study1", "real")
    assert path == tmp_path / "cxr_fid" / "study1" / "real.safetensors"
    for k in range(0, 12, 4):
        accumulate(path, FeatureStats.from_features(feats[k : k + 4], INFO))
    stats = load_stats(path)
    assert stats.n == 12 and stats.extractor == INFO
    assert torch.allclose(stats.covariance(), torch.cov(feats.double().T), atol=1e-10)


def test_mixing_extractors_is_refused(tmp_path: Path) -> None:
    path = stats_path(tmp_path, "s", "real")
    accumulate(path, FeatureStats.from_features(torch.randn(4, 8), INFO))
    other = ExtractorInfo("test", "other model", "fff000", 8)
    with pytest.raises(ValueError, match="use the same feature extractor"):
        accumulate(path, FeatureStats.from_features(torch.randn(4, 8), other))


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/b", "", ".hidden", "x..y"])
def test_set_and_study_names_stay_inside_the_output_folder(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="study: expected a name"):
        stats_path(tmp_path, bad, "real")
    with pytest.raises(ValueError, match="set_name: expected a name"):
        stats_path(tmp_path, "s", bad)


def test_report_counts_samples_and_warns_below_the_feature_dimension(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(2)
    accumulate(
        stats_path(tmp_path, "s", "real"), FeatureStats.from_features(torch.randn(5, 8, generator=g), INFO)
    )
    accumulate(
        stats_path(tmp_path, "s", "gen"), FeatureStats.from_features(torch.randn(40, 8, generator=g), INFO)
    )
    rep = fid_report(tmp_path, "s", "real", "gen")
    assert (rep["n_a"], rep["n_b"], rep["feature_dim"]) == (5, 40, 8)
    assert rep["reliable"] is False and len(rep["warnings"]) == 1
    assert "'real' has 5 samples, fewer than the feature dimension 8" in rep["warnings"][0]
    json.dumps(rep, allow_nan=False)
    with pytest.raises(ValueError, match="no statistics"):
        fid_report(tmp_path, "s", "real", "missing")


_WORKER = r"""
import sys, torch
from import_pack import import_pack
import_pack()
from cxr_pack.cxr_core.metrics import features as feats, fid
info = feats.ExtractorInfo("test", "test features", "abc123", 8)
path = fid.stats_path(sys.argv[1], "conc", "real")
w = int(sys.argv[2])
for k in range(5):
    x = torch.full((3, 8), float(w * 5 + k), dtype=torch.float64)
    fid.accumulate(path, fid.FeatureStats.from_features(x, info))
"""


def test_concurrent_processes_never_lose_samples(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), str(w)], env=WORKER_ENV)
        for w in range(6)
    ]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    stats = load_stats(stats_path(tmp_path, "conc", "real"))
    values = torch.arange(30, dtype=torch.float64).repeat_interleave(3)
    assert stats.n == 90
    assert torch.allclose(stats.mean, torch.full((8,), float(values.mean()), dtype=torch.float64))
    assert float(stats.covariance()[0, 0]) == pytest.approx(float(values.var()), rel=1e-10)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_inception_file(tmp_path_factory.mktemp("inception") / "random_inception_fid.safetensors")


def test_inception_loads_from_safetensors_and_gives_2048_features(inception_file: Path) -> None:
    from cxr_pack.cxr_core.metrics.inception import _FIDInceptionE2, load_inception

    ext = load_inception(inception_file)
    assert isinstance(ext.model.Mixed_7c, _FIDInceptionE2)  # 1008 classes: pytorch-fid's blocks
    assert ext.info.kind == "inception" and ext.info.dim == 2048 and len(ext.info.fingerprint) == 16
    imgs = as_image(torch.stack([demo_radiograph(128)[:120, :120], torch.rand(120, 120)]))
    f = ext.features(imgs)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    assert torch.equal(f, ext.features(imgs)), "features must be deterministic (eval mode)"
    assert not torch.allclose(f[0], f[1])


def test_inception_loads_a_weights_only_state_dict_like_safetensors(
    inception_file: Path, tmp_path: Path
) -> None:
    from cxr_pack.cxr_core.metrics.inception import load_inception
    from safetensors.torch import load_file

    pth = tmp_path / "same_weights.pth"
    torch.save(load_file(str(inception_file)), pth)
    a, b = load_inception(inception_file), load_inception(pth)
    assert a.info.fingerprint == b.info.fingerprint, "same weights, same extractor, whatever the file format"
    img = as_image(torch.rand(1, 80, 80, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(a.features(img), b.features(img))


def test_inception_with_torchvision_imagenet_layout_keeps_torchvision_blocks(tmp_path: Path) -> None:
    from cxr_pack.cxr_core.metrics.inception import _FIDInceptionE, load_inception
    from torchvision.models.inception import InceptionE

    path = random_inception_file(
        tmp_path / "imagenet_like.pth.safetensors", seed=1, num_classes=1000, aux_logits=True
    )
    ext = load_inception(path)
    assert type(ext.model.Mixed_7c) is InceptionE and not isinstance(ext.model.Mixed_7b, _FIDInceptionE)
    assert "torchvision blocks" in ext.info.name
    assert ext.features(as_image(torch.rand(1, 64, 64))).shape == (1, 2048)


def test_inception_refuses_pickles_and_foreign_files(tmp_path: Path) -> None:
    from cxr_pack.cxr_core.metrics.inception import load_inception

    pickled = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole pickled module, not a state dict
    with pytest.raises(ValueError, match="not a plain state dict"):
        load_inception(pickled)
    foreign = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)
    with pytest.raises(ValueError, match="is not an Inception-v3 state dict"):
        load_inception(foreign)
    with pytest.raises(ValueError, match="does not exist"):
        load_inception(tmp_path / "missing.safetensors")


@pytest.fixture
def comfy_dirs(tmp_path: Path) -> Iterator[Path]:
    with comfy_folders(output=tmp_path / "output", temp=tmp_path / "temp"):
        yield tmp_path / "output"


def test_fid_nodes_with_inception(
    comfy_dirs: Path, inception_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import folder_paths
    from cxr_pack.nodes.fid import CXRFIDAccumulate, CXRFIDCompute, CXRInceptionLoader

    monkeypatch.setitem(
        folder_paths.folder_names_and_paths, "inception", ([str(inception_file.parent)], set())
    )
    assert inception_file.name in CXRInceptionLoader.define_schema().inputs[0].options
    inception = CXRInceptionLoader.execute(weights=inception_file.name).result[0]
    x = demo_radiograph(96)[:90, :90]
    g = torch.Generator().manual_seed(0)
    real = as_image(torch.stack([(x + 0.02 * k).clamp(0, 1) for k in range(3)]))
    gen = as_image(torch.rand(3, 90, 90, generator=g))
    before = CXRFIDCompute.fingerprint_inputs(study="st", set_a="real", set_b="generated")
    out = CXRFIDAccumulate.execute(images=real, study="st", set_name="real", inception=inception)
    summary = out.ui["cxr_fid"][0]
    assert (summary["n"], summary["added"], summary["feature_dim"]) == (3, 3, 2048)
    for k in range(3):  # one prompt per image, as a queue would do
        CXRFIDAccumulate.execute(images=gen[k : k + 1], study="st", set_name="generated", inception=inception)
    assert CXRFIDCompute.fingerprint_inputs(study="st", set_a="real", set_b="generated") != before
    res = CXRFIDCompute.execute(study="st", set_a="real", set_b="generated")
    fid, report = res.result
    rep = json.loads(report)
    assert rep == res.ui["cxr_fid"][0] and rep["fid"] == fid
    assert (rep["n_a"], rep["n_b"]) == (3, 3) and rep["reliable"] is False
    fr, fg = inception.features(real).double(), inception.features(gen).double()
    expected = _eigh_reference(
        fr.mean(0).numpy(), torch.cov(fr.T).numpy(), fg.mean(0).numpy(), torch.cov(fg.T).numpy()
    )
    assert fid == pytest.approx(expected, rel=1e-6)
    assert rep["sqrt_method"] == "eigh (rank-deficient covariances)"
    assert fid > 0 and math.isfinite(fid)
    assert any("fewer than the feature dimension 2048" in line for line in res.ui["text"])


def test_fid_nodes_with_clip_vision(comfy_dirs: Path, tmp_path: Path) -> None:
    from cxr_pack.nodes.fid import CXRFIDAccumulate, CXRFIDCompute

    clip = tiny_clip_vision(tmp_path)
    g = torch.Generator().manual_seed(3)
    real = as_image(torch.rand(20, 40, 40, generator=g))
    gen = as_image((torch.rand(20, 40, 40, generator=g) * 0.5).clamp(0, 1))
    CXRFIDAccumulate.execute(images=real, study="clip", set_name="real", clip_vision=clip)
    CXRFIDAccumulate.execute(images=gen, study="clip", set_name="generated", clip_vision=clip)
    rep = json.loads(CXRFIDCompute.execute(study="clip", set_a="real", set_b="generated").result[1])
    assert rep["feature_dim"] == 16 and rep["extractor"]["kind"] == "clip_vision"
    assert rep["reliable"] is True and rep["warnings"] == []
    assert rep["sqrt_method"] == "scipy.linalg.sqrtm"
    assert rep["fid"] > 0
    same = json.loads(CXRFIDCompute.execute(study="clip", set_a="real", set_b="real").result[1])
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)


def test_fid_accumulate_needs_exactly_one_extractor(comfy_dirs: Path, tmp_path: Path) -> None:
    from cxr_pack.nodes.fid import CXRFIDAccumulate

    img = as_image(torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match="exactly one feature extractor.*neither"):
        CXRFIDAccumulate.execute(images=img, study="s", set_name="real")
    with pytest.raises(ValueError, match="study: expected a name"):
        CXRFIDAccumulate.execute(
            images=img, study="../up", set_name="real", clip_vision=tiny_clip_vision(tmp_path)
        )
