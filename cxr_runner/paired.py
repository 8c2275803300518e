"""Paired statistics of a study: every variant against the reference (the full method) over the same images.

Per metric and variant: mean, sample standard deviation, a 95% percentile
bootstrap confidence interval of the mean, and n (finite values). Per metric
and variant other than the reference, over the images both have (paired by
the manifest row's cells and the image index): n pairs, the mean paired
difference (variant - reference) with its bootstrap CI, the Wilcoxon
signed-rank test (two-sided; zero differences dropped, as Wilcoxon did; exact
p for fewer than 50 pairs without ties, else the normal approximation, as
scipy chooses), the matched-pairs rank-biserial correlation as effect size
((R+ - R-) / (R+ + R-), in [-1, 1], positive when the variant is higher), and
the p value after Holm's step-down correction over the variants of that
metric (one family per metric). Differences within 1e-6 (relative) of zero
are float32 rounding noise and count as zero. The bootstrap is seeded, so tables repeat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from .aggregate import _number

if (
    TYPE_CHECKING
):  # numpy and scipy are imported when statistics are computed: the runner itself needs neither
    import numpy as np

NOISE = 1e-6  # relative size of a difference treated as zero (metrics are computed in float32)
PairKey = tuple[tuple[tuple[str, str], ...], str]  # (row cells, image index)


class Summary(NamedTuple):
    mean: float
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class Comparison:
    variant: str
    metric: str
    n_pairs: int
    mean_diff: float
    ci_low: float | None
    ci_high: float | None
    statistic: float | None  # Wilcoxon W (the smaller rank sum)
    p: float | None
    p_holm: float | None
    rank_biserial: float | None


def paired_values(lines: list[dict[str, str]], metric: str) -> dict[PairKey, float]:
    """{(row cells, image index): value} over the ok lines of a results CSV with a finite value of ``metric``."""
    out: dict[PairKey, float] = {}
    for line in lines:
        if line.get("status") != "ok":
            continue
        value = _number(line.get("metric." + metric))
        if value is None or not math.isfinite(value):
            continue
        cells = tuple(sorted((k, v) for k, v in line.items() if k and k.startswith("row.")))
        out[(cells, str(line.get("image_index", "")))] = value
    return out


def bootstrap_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float] | None:  # fmt: skip
    """Percentile bootstrap interval of the mean; None below two values."""
    import numpy as np

    if values.size < 2:
        return None
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def summarize(values: list[float], n_boot: int, seed: int) -> Summary | None:
    import numpy as np

    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return None
    ci = bootstrap_ci(arr, n_boot, np.random.default_rng(seed))
    sd = float(arr.std(ddof=1)) if arr.size > 1 else None
    return Summary(float(arr.mean()), sd, *(ci or (None, None)), int(arr.size))


def wilcoxon(diffs: np.ndarray) -> tuple[float, float, float] | None:
    """(W, two-sided p, rank-biserial r) of paired differences; None when every difference is zero."""
    import numpy as np
    from scipy import stats

    nonzero = diffs[diffs != 0]
    if nonzero.size == 0:
        return None
    ranks = stats.rankdata(np.abs(nonzero))
    r_plus, r_minus = float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())
    result = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided")
    return float(result.statistic), float(result.pvalue), (r_plus - r_minus) / (r_plus + r_minus)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p values (None stays None; adjusted values are monotone and capped at 1)."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(order)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted


def compare(per_variant: dict[str, list[dict[str, str]]], reference: str, metrics: list[str],
            n_boot: int = 2000, seed: int = 0) -> tuple[dict[str, dict[str, Summary]], list[Comparison]]:  # fmt: skip
    """Summaries {variant: {metric: Summary}} and the comparisons against ``reference``, Holm-adjusted per metric."""
    import numpy as np

    if reference not in per_variant:
        raise KeyError(f"reference variant '{reference}' is not among the results ({', '.join(per_variant)})")
    summaries: dict[str, dict[str, Summary]] = {name: {} for name in per_variant}
    comparisons: list[Comparison] = []
    for metric in metrics:
        values = {name: paired_values(lines, metric) for name, lines in per_variant.items()}
        for name, vals in values.items():
            s = summarize(list(vals.values()), n_boot, seed)
            if s is not None:
                summaries[name][metric] = s
        family = []
        for name, vals in values.items():
            if name == reference:
                continue
            keys = sorted(set(vals) & set(values[reference]))
            if not keys:
                continue
            a = np.asarray([vals[k] for k in keys], dtype=np.float64)
            b = np.asarray([values[reference][k] for k in keys], dtype=np.float64)
            diffs = a - b
            # differences at floating-point noise level are ties, not evidence (e.g. two variants with the same region)
            diffs[np.abs(diffs) <= NOISE * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))] = 0.0
            ci = bootstrap_ci(diffs, n_boot, np.random.default_rng(seed))
            test = wilcoxon(diffs) if diffs.size > 1 else None
            family.append(Comparison(name, metric, int(diffs.size), float(diffs.mean()), *(ci or (None, None)),
                                     *(test[:2] if test else (None, None)), None, test[2] if test else None))  # fmt: skip
        adjusted = holm([c.p for c in family])
        comparisons += [
            Comparison(**{**c.__dict__, "p_holm": a}) for c, a in zip(family, adjusted, strict=True)
        ]
    return summaries, comparisons
