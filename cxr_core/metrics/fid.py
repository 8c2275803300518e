"""FID: streaming Gaussian feature statistics persisted to disk, and the Frechet distance.

One workflow run sees one image, so statistics accumulate across prompts
(README.md, "FID over many prompts"). A set ("real", "generated", ... under a study name) is
a file ``<output>/cxr_fid/<study>/<set>.safetensors`` holding the sample count
n, the mean (D,) and the sum of centred outer products M2 (D, D), in float64.
Batches merge with Chan et al.'s parallel update

    n = na + nb,  delta = mean_b - mean_a,
    mean = mean_a + delta nb / n,
    M2 = M2_a + M2_b + delta delta^T na nb / n,

which is exact and avoids the cancellation of raw sums. The covariance is
M2 / (n - 1). Each update is a read-merge-write under an exclusive file lock
with an atomic rename, so concurrent prompts never lose or corrupt samples.

Frechet distance between N(mu1, S1) and N(mu2, S2):

    d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)),

with the matrix square root from ``scipy.linalg.sqrtm``, as pytorch-fid computes
it (an eps * I offset when the product is singular, the imaginary part dropped
when it is numerical noise); where sqrtm fails outright, the symmetric
eigenvalue route (``frechet_distance_details``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .features import ExtractorInfo
from .locking import atomic_write_bytes, exclusive_lock, safe_output_path

log = logging.getLogger("cxr_counterfactual.metrics.fid")

FID_FOLDER = "cxr_fid"
FORMAT = "cxr_fid_stats/1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True)
class FeatureStats:
    n: int
    mean: torch.Tensor  # (D,) float64
    m2: torch.Tensor  # (D, D) float64, sum of centred outer products
    extractor: ExtractorInfo

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def covariance(self) -> torch.Tensor:
        if self.n < 2:
            raise ValueError(f"FID: a set needs at least 2 samples for a covariance, it has {self.n}")
        return self.m2 / (self.n - 1)

    @staticmethod
    def from_features(features: torch.Tensor, extractor: ExtractorInfo) -> FeatureStats:
        """Statistics of a batch (N, D), computed on the features' device."""
        f = features.detach().to(torch.float32 if features.device.type == "mps" else torch.float64)
        if f.ndim != 2 or f.shape[0] == 0:
            raise ValueError(f"FID: expected features shaped (N, D) with N >= 1, received {tuple(f.shape)}")
        if not bool(torch.isfinite(f).all()):
            raise ValueError(
                "FID: the feature extractor returned NaN/Inf features; check the images and the model"
            )
        mean = f.mean(0)
        c = f - mean
        return FeatureStats(int(f.shape[0]), mean.cpu().double(), (c.T @ c).cpu().double(), extractor)

    def merge(self, other: FeatureStats) -> FeatureStats:
        if self.extractor.fingerprint != other.extractor.fingerprint or self.dim != other.dim:
            raise ValueError(
                f"FID: features from {other.extractor.name} (fingerprint {other.extractor.fingerprint}, "
                f"dim {other.dim}) cannot join a set built with {self.extractor.name} (fingerprint "
                f"{self.extractor.fingerprint}, dim {self.dim}); use the same feature extractor or a new study"
            )
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + torch.outer(delta, delta) * (self.n * other.n / n)
        return FeatureStats(n, mean, m2, self.extractor)


def check_set_name(value: str, input_name: str) -> str:
    v = (value or "").strip()
    if not _NAME.match(v) or ".." in v:
        raise ValueError(
            f"{input_name}: expected a name of letters, digits, '_', '-' and '.' (1-64 characters, "
            f"starting with a letter or digit, no '..'), received {value!r}"
        )
    return v


def stats_path(output_dir: str | os.PathLike, study: str, set_name: str) -> Path:
    study = check_set_name(study, "study")
    set_name = check_set_name(set_name, "set_name")
    return safe_output_path(
        output_dir, f"{FID_FOLDER}/{study}/{set_name}.safetensors", "set_name", ".safetensors"
    )


def save_stats(path: Path, stats: FeatureStats) -> None:
    from safetensors.torch import save

    meta = {"format": FORMAT, "n": str(stats.n), "extractor": json.dumps(stats.extractor.as_dict())}
    atomic_write_bytes(
        path, save({"mean": stats.mean.contiguous(), "m2": stats.m2.contiguous()}, metadata=meta)
    )


def load_stats(path: Path) -> FeatureStats:
    from safetensors import safe_open

    if not path.is_file():
        raise ValueError(
            f"FID: no statistics at '{path.parent.name}/{path.name}'; accumulate this set first (CXRFIDAccumulate)"
        )
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        meta = fh.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"FID: '{path.parent.name}/{path.name}' is not a {FORMAT} statistics file (format {meta.get('format')!r})"
            )
        mean, m2 = fh.get_tensor("mean"), fh.get_tensor("m2")
    return FeatureStats(int(meta["n"]), mean, m2, ExtractorInfo(**json.loads(meta["extractor"])))


def accumulate(path: Path, batch: FeatureStats) -> FeatureStats:
    """Merge a batch into the set at ``path`` (read-merge-write under an exclusive lock)."""
    with exclusive_lock(path):
        total = load_stats(path).merge(batch) if path.is_file() else batch
        save_stats(path, total)
    log.debug("set %s now holds %d samples", path, total.n)
    return total


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr (S1 S2)^(1/2) for PSD S1, S2 as sum sqrt(eig(S1^(1/2) S2 S1^(1/2))); stable when singular."""
    from scipy import linalg

    w, v = linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    lam = linalg.eigvalsh(r1 @ s2 @ r1)
    return float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
    """Squared Frechet distance between two Gaussians (arrays or tensors; computed in float64 numpy)."""
    return frechet_distance_details(mu1, sigma1, mu2, sigma2, eps)[0]


def frechet_distance_details(
    mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6, rank_deficient: bool = False
) -> tuple[float, str]:
    """The distance and how Tr (S1 S2)^(1/2) was computed.

    ``scipy.linalg.sqrtm`` of S1 S2, as pytorch-fid does (retried with eps * I on
    the diagonals when the result is not finite). When sqrtm still fails (an
    imaginary part above 1e-3, typical of rank-deficient covariances from fewer
    samples than dimensions) the trace comes from the symmetric eigenvalue route
    instead, which is exact for PSD matrices; the method string says so.
    ``rank_deficient`` (a set smaller than the feature dimension) goes to that
    route directly: sqrtm of a singular product is unreliable and slow.
    """
    from scipy import linalg

    mu1, mu2 = (np.asarray(torch.as_tensor(m).double().cpu()) for m in (mu1, mu2))
    s1, s2 = (np.asarray(torch.as_tensor(s).double().cpu()) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(
            f"FID: statistics differ in shape, {mu1.shape}/{s1.shape} and {mu2.shape}/{s2.shape}"
        )
    diff = mu1 - mu2
    if rank_deficient:
        tr = _trace_sqrt_product_eigh(s1, s2)
        return float(
            diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr
        ), "eigh (rank-deficient covariances)"
    method = "scipy.linalg.sqrtm"
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        log.warning("FID: singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
        method += f" (+{eps:g} I)"
    imag = float(np.max(np.abs(np.diagonal(covmean).imag))) if np.iscomplexobj(covmean) else 0.0
    if not np.isfinite(covmean).all() or imag > 1e-3:
        log.warning("FID: sqrtm unstable (imaginary part %.3g); using the symmetric eigenvalue route", imag)
        tr_covmean = _trace_sqrt_product_eigh(s1, s2)
        method = f"eigh (sqrtm unstable, imaginary part {imag:.3g})"
    else:
        tr_covmean = float(np.trace(covmean.real))
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean), method


def fid_report(output_dir: str | os.PathLike, study: str, set_a: str, set_b: str) -> dict[str, Any]:
    """FID between two stored sets, with the sample counts and warnings."""
    pa, pb = stats_path(output_dir, study, set_a), stats_path(output_dir, study, set_b)
    a, b = load_stats(pa), load_stats(pb)
    if a.extractor.fingerprint != b.extractor.fingerprint or a.dim != b.dim:
        raise ValueError(
            f"FID: sets '{set_a}' ({a.extractor.name}, {a.extractor.fingerprint}) and '{set_b}' "
            f"({b.extractor.name}, {b.extractor.fingerprint}) use different feature extractors; "
            "accumulate both with the same one"
        )
    warnings = []
    for name, s in ((set_a, a), (set_b, b)):
        if s.n < s.dim:
            warnings.append(
                f"set '{name}' has {s.n} samples, fewer than the feature dimension {s.dim}: its covariance is "
                "rank-deficient and the FID estimate is unreliable (biased, high variance); use at least "
                f"{s.dim} samples per set"
            )
    value, method = frechet_distance_details(
        a.mean, a.covariance(), b.mean, b.covariance(), rank_deficient=bool(warnings)
    )
    return {
        "study": study,
        "set_a": set_a,
        "set_b": set_b,
        "fid": value,
        "n_a": a.n,
        "n_b": b.n,
        "feature_dim": a.dim,
        "extractor": a.extractor.as_dict(),
        "sqrt_method": method,
        "reliable": not warnings,
        "warnings": warnings,
    }
