"""Every per-image metric, defined once: name, unit, which way is better, region and definition.

The JSON record (report.py), the CSV columns (csv_log.py), the headless runner's
default table and arrows (cxr_runner/aggregate.py) and the README's Metrics table
are all derived from ``METRICS``, in its order. A metric whose ``measure`` is set
is computed by image_scores.py for its ``region``, so adding e.g. PSNR inside the
region is one line here. Plain Python (no torch): the runner imports it too.
"""

from __future__ import annotations

from dataclasses import dataclass

MEASURES = ("ssim", "psnr", "mae")  # computed by image_scores.pair_scores over a region
REGIONS = ("image", "outside", "inside")  # ... weighted by 1, 1 - m or m (m: the soft target region)
REGION_TEXT = {"image": "the images", "outside": "outside the region", "inside": "inside the region"}
VALIDITY_FIELDS = (
    "label",
    "p_before",
    "p_after",
    "delta",
    "status",
)  # validity's CSV columns: validity_<field>


@dataclass(frozen=True)
class Metric:
    name: str  # key in the JSON record, CSV column, ``metric.<name>`` in the runner's results
    unit: str  # "" for a plain number
    better: str  # "higher", "lower", or "" (describes the input, or neither is better)
    region: str  # where it is measured: image, outside, inside, organs, region
    definition: str
    measure: str = (
        ""  # one of MEASURES: image_scores computes it over ``region``; "" computed by its own code
    )
    kind: str = "number"  # "number", "per_organ" ({organ: number}) or "validity" (an object)
    summary: str = ""  # the runner's default table shows this column (name, or name.field); "" not by default

    @property
    def arrow(self) -> str:
        return {"higher": "↑", "lower": "↓"}.get(self.better, "")

    @property
    def infinite_flag(self) -> str:
        """The record's ``<name>_infinite`` key of a PSNR (identical images have MSE 0); "" for others."""
        return self.name.removesuffix("_db") + "_infinite" if self.measure == "psnr" else ""

    def csv_columns(self) -> tuple[str, ...]:
        if self.kind == "validity":
            return tuple(f"{self.name}_{f}" for f in VALIDITY_FIELDS)
        return (self.name,)


def _m(name: str, unit: str, better: str, region: str, definition: str, measure: str = "", kind: str = "number",
       summary: bool = True) -> Metric:  # fmt: skip
    column = ("validity.delta" if kind == "validity" else name) if summary else ""
    return Metric(name, unit, better, region, definition, measure, kind, column)


_SSIM = (
    "SSIM with an 11-tap Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data range 1, averaged like scikit-image's "
    "`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`: over "
    "the image minus a 5-pixel border. Equal to it within 1e-4 (tested on the demo radiograph and random images)."
)
METRICS: tuple[Metric, ...] = (
    _m("region_fraction", "", "", "region", "mean of m", summary=False),
    _m("ssim_global", "", "higher", "image", _SSIM, "ssim"),
    _m(
        "ssim_outside",
        "",
        "higher",
        "outside",
        "the same SSIM map averaged with weight 1 - m (background preservation, the main anatomy figure)",
        "ssim",
    ),  # fmt: skip
    _m("ssim_inside", "", "", "inside", "the SSIM map averaged with weight m", "ssim"),
    _m(
        "ssim_organs",
        "",
        "higher",
        "organs",
        "`{organ: SSIM map averaged with the organ's mask}` for each organ not listed in `target_organs`",
        kind="per_organ",
        summary=False,
    ),  # fmt: skip
    _m("psnr_global_db", "dB", "higher", "image", "10 log10(1 / MSE), MSE over the image", "psnr"),
    _m("psnr_outside_db", "dB", "higher", "outside", "10 log10(1 / MSE), MSE weighted by 1 - m", "psnr"),
    _m("mae_global", "", "lower", "image", "mean absolute difference", "mae"),
    _m("mae_outside", "", "lower", "outside", "mean absolute difference weighted by 1 - m", "mae"),
    _m("mae_inside", "", "", "inside", "mean absolute difference weighted by m", "mae", summary=False),
    _m(
        "localisation",
        "",
        "higher",
        "inside",
        "sum(m \\|x~ - x0\\|) / sum(\\|x~ - x0\\|): the share of the change "
        "inside the region; 1 is perfectly local",
    ),  # fmt: skip
    _m("max_abs_diff", "", "", "image", "max \\|x~ - x0\\|, the scale of the heat map", summary=False),
    _m(
        "clip_i",
        "",
        "higher",
        "image",
        "cosine similarity of the CLIP_VISION `image_embeds` of x0 and x~ "
        "(ComfyUI's CLIP preprocessing; grey repeated to RGB)",
    ),  # fmt: skip
    _m(
        "validity",
        "",
        "",
        "image",
        "the classifier's calibrated probability of `validity_label` before and after "
        "(below); the runner tabulates `validity.delta`",
        kind="validity",
    ),  # fmt: skip
)
BY_NAME = {m.name: m for m in METRICS}
# record fields that describe the run or the input, not the pair's similarity
RECORD_FIELDS = ("schema_version", "run_tag", "image_index", "batch_size", "height", "width", "original_channels",
                 "counterfactual_channels", "excluded_organs", "null_reasons")  # fmt: skip


def lookup(column: str) -> Metric | None:
    """The metric a record or results column names (``ssim_organs.heart`` and ``validity.delta`` included)."""
    return BY_NAME.get(column) or BY_NAME.get(column.split(".")[0])


def summary_columns() -> list[str]:
    """The columns the runner tabulates when none are chosen, in registry order."""
    return [m.summary for m in METRICS if m.summary]


def markdown_table() -> str:
    """The README's Metrics table (tests/test_metrics_registry.py keeps the README equal to it)."""
    lines = ["| metric | unit | better | region | definition |", "|---|---|---|---|---|"]
    for m in METRICS:
        lines.append(f"| `{m.name}` | {m.unit} | {m.better} | {m.region} | {m.definition} |")
    return "\n".join(lines) + "\n"
