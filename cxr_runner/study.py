"""Ablation studies: run workflow variants over one manifest, then tabulate and chart mean ± std per metric.

Study file (JSON; paths relative to it)::

    {"manifest": "rows.csv",
     "map": {"image": "Radiograph.image", "seed": "Sampler.seed"},
     "set": {"Sampler.steps": 30},
     "variants": {"full": "example_workflows/api/cxr_counterfactual_full.json",
                  "no gate": "example_workflows/api/ablation_no_gate.json",
                  "PIE": {"workflow": "example_workflows/api/baseline_pie_progressive.json",
                          "map": {"seed": "Sampler round 1.seed"}}},
     "metrics": ["ssim_outside", "localisation"], "title": "Left effusion, 50 films"}

A mapped or fixed input whose node a variant does not have (a bypassed module,
a baseline built differently) is left out for that variant, with a note; a
variant's own ``map`` replaces the study's entry for that column. Each variant
runs into ``<out>/<variant>/`` (resumable, as the manifest command); the table
goes to ``<out>/study.md`` and ``study.csv``, the chart to ``study.png``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .aggregate import aggregate, collect, images_per_variant, markdown, metric_order, write_table_csv
from .charts import bar_chart
from .errors import RunnerError
from .jobs import Job, Report, run_job
from .manifest import Mapping, load_mapping, mapping_from_json, read_manifest
from .overrides import Override, parse_override
from .paired_report import write_paired_report
from .strata import write_stratified
from .workflow_format import WorkflowFormatError, node_ids
from .workflow_io import read_workflow, to_api

log = logging.getLogger("cxr_counterfactual.runner")


@dataclass
class Variant:
    name: str
    workflow: Path
    mapping: Mapping = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)


@dataclass
class Study:
    manifest: Path
    variants: list[Variant]
    mapping: Mapping = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    metrics: list[str] | None = None
    title: str = ""


def slug(name: str) -> str:
    """A folder name for a variant."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip()) or "variant"


def load_study(path: Path | None, manifest: Path | None = None, variants: list[str] | None = None,
               map_items: list[str] | None = None, map_file: Path | None = None, set_items: list[str] | None = None,
               metrics: list[str] | None = None, title: str | None = None) -> Study:  # fmt: skip
    """A study from a JSON file and/or flags (flags add variants and mapping entries, and replace the rest)."""
    spec: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        if not path.is_file():
            raise RunnerError(f"study file {path} does not exist")
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise RunnerError(f"study file {path} is not JSON: {e}") from e
        if not isinstance(spec, dict):
            raise RunnerError(f"study file {path}: expected a JSON object with 'manifest' and 'variants'")
        base = path.parent
    src = str(path) if path else "study flags"
    manifest_path = manifest or (base / spec["manifest"] if spec.get("manifest") else None)
    if manifest_path is None:
        raise RunnerError(f"{src}: no manifest; give 'manifest' in the study file or --manifest")
    mapping = mapping_from_json(spec.get("map", {}), f"{src} 'map'")
    for column, targets in load_mapping(map_items or [], map_file, None).items():
        mapping.setdefault(column, []).extend(targets)
    found = [_variant(name, v, base, src) for name, v in (spec.get("variants") or {}).items()]
    for item in variants or []:
        name, eq, wf = item.partition("=")
        if not eq or not name.strip() or not wf.strip():
            raise RunnerError(f"--variant '{item}': expected NAME=WORKFLOW.json")
        found.append(Variant(name.strip(), Path(wf.strip())))
    if not found:
        raise RunnerError(
            f"{src}: no variants; give 'variants' in the study file or --variant NAME=WORKFLOW.json"
        )
    if len({slug(v.name) for v in found}) != len(found):
        raise RunnerError(f"{src}: variant names must differ (as folder names): {[v.name for v in found]}")
    return Study(
        manifest=manifest_path,
        variants=found,
        mapping=mapping,
        overrides=_overrides(spec.get("set"), src) + [parse_override(s) for s in set_items or []],
        metrics=metrics or spec.get("metrics"),
        title=title if title is not None else str(spec.get("title", "")),
    )


def run_study(study: Study, template: Job, object_info: dict | None = None) -> dict[str, Report]:
    """Run every variant over the manifest (``template`` gives out folder, servers, shard, retries...)."""
    rows = read_manifest(study.manifest, study.mapping)
    apis = {v.name: _load(v, object_info) for v in study.variants}
    check_targets_somewhere(study, apis)
    jobs = [_job(study, v, apis[v.name], template) for v in study.variants]  # every variant checked first
    reports = {}
    for variant, job in zip(study.variants, jobs, strict=True):
        log.info("variant '%s': %s", variant.name, variant.workflow)
        reports[variant.name] = run_job(job, rows)
        log.info("variant '%s': %s", variant.name, reports[variant.name].summary())
    return reports


def write_study_report(sources: dict[str, Path], out: Path, metrics: list[str] | None = None, title: str = "",
                       reference: str | None = None, n_boot: int = 2000,
                       by: list[str] | None = None) -> tuple[Path, Path, Path]:  # fmt: skip
    """study.md, study.csv and study.png in ``out`` from each variant's results.

    With two or more variants, the paired statistics against ``reference``
    (default: a variant named 'full', else the first) are appended to study.md
    and written to paired.md, paired.csv and paired.png; with ``by``, also per
    level of each of those manifest columns (paired_by_<column>.md/.csv).
    """
    per_variant = collect(sources)
    table = aggregate(per_variant, metrics)
    order = metrics or metric_order(table)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "study.md"
    header = f"# {title}\n\n" if title else ""
    text = header + ("Mean ± sample standard deviation over the images of the rows that succeeded; n counts "
                     "images.\n\n" + markdown(table, order, images_per_variant(per_variant)))  # fmt: skip
    if len(per_variant) > 1:
        ref = reference or ("full" if "full" in per_variant else next(iter(per_variant)))
        if ref not in per_variant:
            raise RunnerError(f"--reference '{ref}': expected one of the variants {', '.join(per_variant)}")
        text += "\n" + write_paired_report(per_variant, out, order, ref, n_boot)[3]
        for column in by or []:
            write_stratified(per_variant, out, order, ref, column, n_boot)
    md.write_text(text, encoding="utf-8")
    return md, write_table_csv(table, out / "study.csv"), bar_chart(table, out / "study.png", title, order)


def _load(variant: Variant, object_info: dict | None) -> dict:
    try:
        return to_api(read_workflow(variant.workflow), object_info, f"variant '{variant.name}'")
    except WorkflowFormatError as e:
        raise RunnerError(f"variant '{variant.name}': {e}") from e


def _job(study: Study, variant: Variant, api: dict, template: Job) -> Job:
    mapping: Mapping = {}
    for column, targets in study.mapping.items():
        if column in variant.mapping:
            continue
        kept = [t for t in targets if node_ids(api, t.node)]
        for t in targets:
            if t not in kept:
                log.info(
                    "variant '%s' has no node '%s': column '%s' is not applied there",
                    variant.name,
                    t.node,
                    column,
                )
        if kept:
            mapping[column] = kept
    mapping.update(variant.mapping)
    overrides = [o for o in study.overrides if node_ids(api, o.target.node)]
    for o in study.overrides:
        if o not in overrides:
            log.info(
                "variant '%s' has no node '%s': '%s' is not set there", variant.name, o.target.node, o.target
            )
    overrides += variant.overrides
    files = [(t, path) for t, path in template.file_overrides if node_ids(api, t.node)]
    return replace(template, workflow=api, mapping=mapping, overrides=overrides, file_overrides=files,
                   out_dir=template.out_dir / slug(variant.name), label=variant.name)  # fmt: skip


def check_targets_somewhere(study: Study, apis: dict[str, dict]) -> None:
    """A study-level target that no variant has is a typo, not an ablation."""
    targets = [(f"map '{c}={t}'", t) for c, ts in study.mapping.items() for t in ts]
    targets += [(f"set '{o.target}'", o.target) for o in study.overrides]
    for what, t in targets:
        if not any(node_ids(api, t.node) for api in apis.values()):
            raise RunnerError(f"study {what}: no variant has a node titled '{t.node}'")


def _variant(name: str, value: Any, base: Path, src: str) -> Variant:
    if isinstance(value, str):
        return Variant(name, base / value)
    if isinstance(value, dict) and isinstance(value.get("workflow"), str):
        return Variant(name, base / value["workflow"], mapping_from_json(value.get("map", {}), f"{src} variant '{name}'"),
                       _overrides(value.get("set"), f"{src} variant '{name}'"))  # fmt: skip
    raise RunnerError(
        f"{src}: variant '{name}' must be a workflow path or {{'workflow': path, 'map': ..., 'set': ...}}"
    )


def _overrides(value: Any, src: str) -> list[Override]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [parse_override(f"{k}={json.dumps(v)}") for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return [parse_override(s) for s in value]
    raise RunnerError(
        f"{src} 'set': expected {{'Node title.input': value}} or ['Node title.input=value', ...]"
    )
