"""Command line: ``python -m cxr_runner {run,manifest,study,aggregate} ...``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .manifest import ManifestError, ManifestJob, parse_mapping, parse_shard, read_manifest, run_manifest
from .overrides import parse_override
from .server import LocalComfyServer
from .study import _slug, aggregate, collect, load_study, run_study, write_report
from .workflow_format import WorkflowFormatError

log = logging.getLogger("cxr_counterfactual.runner")


def _load_workflow(path: Path) -> dict:
    if not path.is_file():
        raise ManifestError(f"workflow {path} does not exist")
    wf = json.loads(path.read_text())
    if "nodes" in wf and "links" in wf:
        raise ManifestError(
            f"{path.name} is an editor (UI) workflow; use its API twin (example_workflows/api/) or export it with "
            "'Export (API)' in ComfyUI"
        )
    return wf


@contextlib.contextmanager
def _servers(args: argparse.Namespace) -> Iterator[list[str]]:
    if args.start_server:
        comfy = args.comfyui_dir or os.environ.get("COMFYUI_DIR")
        if not comfy:
            raise ManifestError("--start-server needs --comfyui-dir or COMFYUI_DIR")
        with LocalComfyServer(comfyui_dir=Path(comfy), python=sys.executable) as server:
            yield [server.base_url]
    else:
        yield args.server or ["http://127.0.0.1:8188"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", action="append", help="ComfyUI URL; repeat for several (one worker each)")
    p.add_argument(
        "--start-server", action="store_true", help="start a local ComfyUI ($COMFYUI_DIR) for this run"
    )
    p.add_argument("--comfyui-dir", help="ComfyUI checkout for --start-server")
    p.add_argument("--out", type=Path, default=Path("runs"), help="results folder")
    p.add_argument("--retries", type=int, default=1, help="retries per row before it is recorded as failed")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per prompt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m cxr_runner", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="queue one API-format workflow")
    run.add_argument("workflow", type=Path)
    run.add_argument(
        "--set", action="append", default=[], help="'Node title.input=value' (JSON values parsed)"
    )
    _common(run)
    man = sub.add_parser("manifest", help="run a workflow over a CSV manifest (resumable, sharded)")
    man.add_argument("workflow", type=Path)
    man.add_argument("manifest", type=Path)
    man.add_argument("--map", action="append", default=[], help="column=Node title.input")
    man.add_argument("--set", action="append", default=[], help="fixed overrides for every row")
    man.add_argument("--shard", default="0/1", help="i/n: rows with index %% n == i")
    _common(man)
    st = sub.add_parser("study", help="run variants over a manifest, then aggregate")
    st.add_argument("study", type=Path)
    _common(st)
    ag = sub.add_parser("aggregate", help="tabulate result folders: NAME=FOLDER ...")
    ag.add_argument("results", nargs="+")
    ag.add_argument("--metrics", help="comma-separated metric names")
    ag.add_argument("--out", type=Path, default=Path("runs"))
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ManifestError, WorkflowFormatError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    show = None if not getattr(args, "quiet", False) else False
    if args.cmd == "aggregate":
        folders = dict(
            item.split("=", 1) if "=" in item else (Path(item).name, item) for item in args.results
        )
        table = aggregate(collect({k: Path(v) for k, v in folders.items()}),
                          args.metrics.split(",") if args.metrics else None)  # fmt: skip
        md, png = write_report(table, args.out)
        sys.stdout.write(md.read_text() + f"\nwrote {md} and {png}\n")
        return 0
    with _servers(args) as servers:
        if args.cmd == "study":
            spec = load_study(args.study)
            counts = run_study(spec, args.out, servers, show)
            table = aggregate(
                collect({n: args.out / _slug(n) for n in spec["variants"]}), spec.get("metrics")
            )
            md, png = write_report(table, args.out)
            sys.stdout.write(f"{json.dumps(counts)}\n{md.read_text()}\nwrote {md} and {png}\n")
            return 0 if all(c["failed"] == 0 for c in counts.values()) else 1
        workflow = _load_workflow(args.workflow)
        overrides = [parse_override(s) for s in args.set]
        if args.cmd == "run":
            job = ManifestJob(
                workflow, args.out, servers, {}, overrides, args.retries, args.timeout, (0, 1), show
            )
            counts = run_manifest(job, [{}])
        else:
            mapping = parse_mapping(args.map)
            rows = read_manifest(args.manifest, mapping)
            job = ManifestJob(workflow, args.out, servers, mapping, overrides, args.retries, args.timeout,
                              parse_shard(args.shard), show)  # fmt: skip
            counts = run_manifest(job, rows)
        sys.stdout.write(f"{json.dumps(counts)}; results in {args.out / 'results.csv'}\n")
        return 0 if counts["failed"] == 0 else 1
