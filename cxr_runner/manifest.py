"""Dataset manifests: the CSV, the mapping of its columns to workflow inputs, shards and row keys.

A manifest is a CSV with a header, one row per counterfactual; the usual
columns are ``image, masks, pathology, side, extent, seed`` and any others are
allowed. A mapping sends columns to inputs (``column -> ["Node title.input",
...]``), from ``--map`` flags or a JSON file (``{"seed": "Sampler.seed", "text":
["Positive prompt.text", "Pathology reweight.text"]}``); a ``<manifest>.map.json``
beside the manifest is used when no mapping is given. An empty cell leaves the
workflow's own value.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from .errors import RunnerError
from .overrides import Override, Target, parse_target
from .workflow_format import WorkflowFormatError

log = logging.getLogger("cxr_counterfactual.runner")
USUAL_COLUMNS = ("image", "masks", "pathology", "side", "extent", "seed")
FILE_COLUMNS = ("image", "masks")  # local files in these columns are uploaded
Mapping = dict[str, list[Target]]


def parse_shard(text: str) -> tuple[int, int]:
    """``'i/n'`` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise RunnerError(f"--shard '{text}': expected i/n with whole numbers, such as 0/4") from e
    if n < 1 or not 0 <= i < n:
        raise RunnerError(f"--shard '{text}': expected 0 <= i < n (shard indices start at 0)")
    return i, n


def shard_rows(rows: list[dict[str, str]], shard: tuple[int, int]) -> list[tuple[int, dict[str, str]]]:
    """(row index, row) for the rows with index % n == i; indices count data rows from 0."""
    i, n = shard
    return [(k, r) for k, r in enumerate(rows) if k % n == i]


def parse_mapping(items: list[str]) -> Mapping:
    """``['column=Node title.input', ...]`` -> {column: [Target, ...]} (a column may feed several inputs)."""
    out: Mapping = {}
    for item in items:
        column, eq, target = item.partition("=")
        if not eq or not column.strip():
            raise RunnerError(f"--map '{item}': expected column=Node title.input")
        try:
            out.setdefault(column.strip(), []).append(parse_target(target))
        except WorkflowFormatError as e:
            raise RunnerError(f"--map '{item}': {e}") from e
    return out


def mapping_from_json(data: Any, source: str) -> Mapping:
    """{column: "Title.input" or [..]} -> Mapping."""
    if not isinstance(data, dict):
        raise RunnerError(
            f"{source}: expected a JSON object {{column: 'Node title.input'}}, got {type(data).__name__}"
        )
    items = []
    for column, targets in data.items():
        for t in [targets] if isinstance(targets, str) else targets if isinstance(targets, list) else [None]:
            if not isinstance(t, str):
                raise RunnerError(
                    f"{source}: column '{column}' must map to 'Node title.input' or a list of them"
                )
            items.append(f"{column}={t}")
    return parse_mapping(items)


def load_mapping(items: list[str], map_file: Path | None, manifest: Path | None) -> Mapping:
    """Mapping from a JSON file, then --map flags (added to it); else the manifest's sidecar."""
    mapping: Mapping = {}
    if map_file is None and not items and manifest is not None:
        sidecar = manifest.with_suffix(".map.json")
        if sidecar.is_file():
            map_file = sidecar
            log.info("mapping from %s", sidecar)
    if map_file is not None:
        if not map_file.is_file():
            raise RunnerError(f"mapping file {map_file} does not exist")
        try:
            mapping = mapping_from_json(json.loads(map_file.read_text(encoding="utf-8")), str(map_file))
        except ValueError as e:
            if isinstance(e, RunnerError):
                raise
            raise RunnerError(f"mapping file {map_file} is not JSON: {e}") from e
    for column, targets in parse_mapping(items).items():
        mapping.setdefault(column, []).extend(targets)
    return mapping


def read_manifest(path: Path, mapping: Mapping) -> list[dict[str, str]]:
    """The manifest's rows (cells stripped); errors name the file, the line and what was expected."""
    if not path.is_file():
        raise RunnerError(f"manifest {path} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [c.strip() for c in reader.fieldnames or []]
            raw_rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise RunnerError(f"manifest {path} is not a UTF-8 CSV file: {e}") from e
    if not header:
        raise RunnerError(f"manifest {path} is empty; expected a header such as {','.join(USUAL_COLUMNS)}")
    if "" in header or len(set(header)) != len(header):
        raise RunnerError(f"manifest {path}: column names must be unique and not empty; header is {header}")
    missing = [c for c in mapping if c not in header]
    if missing:
        raise RunnerError(f"manifest {path}: mapped columns {missing} are not in its header {header}")
    rows = []
    for line, raw in enumerate(raw_rows, start=2):
        if None in raw or any(v is None for v in raw.values()):
            raise RunnerError(
                f"manifest {path}, line {line}: expected {len(header)} cells ({','.join(header)})"
            )
        rows.append({k.strip(): v.strip() for k, v in raw.items()})
    if not rows:
        log.warning("manifest %s has a header but no rows", path)
    return rows


def row_key(row: dict[str, str], recipe: dict[str, Any]) -> str:
    """Stable key of a row: a hash of its cells and of everything else that decides its prompt.

    ``recipe`` holds the workflow, the mapping, fixed overrides and the digests
    of uploaded files; the row's position in the manifest is not part of it.
    """
    blob = json.dumps({"row": row, "recipe": recipe}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def row_overrides(row: dict[str, str], mapping: Mapping, values: dict[str, Any]) -> list[Override]:
    """The overrides a row makes: each mapped, non-empty column's value (``values``) into its targets."""
    return [Override(t, values[column]) for column, targets in mapping.items() if row[column] != ""
            for t in targets]  # fmt: skip
