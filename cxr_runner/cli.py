"""Command line: ``cxr-runner {run,manifest,study,report,aggregate,dataset} ...`` (or ``python -m cxr_runner``).

run        queue one workflow (API format; a plain editor workflow is converted), with --set overrides
manifest   run a workflow over a CSV manifest: resumable, retried, sharded (--shard i/n), over several servers
study      run workflow variants over one manifest, then the report below
report     a study folder's tables (mean ± sd, bootstrap CIs, Wilcoxon vs the reference with Holm), charts,
           picture grid, report.md and report.html
aggregate  tabulate existing results CSVs again
dataset    build a manifest from MIMIC-CXR-JPG, CheXpert or a mapped dataset with CheXmask masks

Exit status: 0 all rows ok, 1 some rows failed or were not run, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from .client import ComfyClient
from .datasets.command import add_dataset_parser, run_dataset_command
from .errors import RunnerError
from .jobs import Job, Report, check_job, check_servers, run_job
from .manifest import load_mapping, parse_shard, read_manifest
from .overrides import Target, parse_override, parse_target
from .report import ReportFiles, write_report
from .results import ResultStore
from .server import LocalComfyServer
from .study import load_study, run_study, slug, write_study_report
from .workflow_format import WorkflowFormatError
from .workflow_io import is_ui_format, read_workflow, to_api

log = logging.getLogger("cxr_counterfactual.runner")
DEFAULT_SERVER = "http://127.0.0.1:8188"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (
        logging.DEBUG if args.verbose else logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    )
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("cxr_counterfactual").setLevel(level)
    try:
        return _dispatch(args)
    except (RunnerError, WorkflowFormatError, FileNotFoundError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished rows are recorded, run the same command again to resume\n")
        return 130


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cxr-runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = ap.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="queue one workflow and fetch its images and metrics")
    run.add_argument("workflow", type=Path, help="API-format workflow JSON (ComfyUI: Export (API))")
    _set_arg(run)
    _common(run)

    man = sub.add_parser("manifest", help="run a workflow over a CSV manifest (resumable, sharded)")
    man.add_argument("workflow", type=Path)
    man.add_argument("manifest", type=Path, help="CSV: image, masks, pathology, side, extent, seed, ...")
    _map_args(man)
    _set_arg(man)
    _shard_arg(man)
    man.add_argument("--file-columns", default="image,masks",
                     help="columns whose local files are uploaded to the server (default image,masks)")  # fmt: skip
    _common(man)

    st = sub.add_parser("study", help="run workflow variants over a manifest, then tabulate and chart")
    st.add_argument("study", type=Path, nargs="?", help="study JSON (or give everything with flags)")
    st.add_argument("--manifest", type=Path, help="manifest CSV (replaces the study file's)")
    st.add_argument("--variant", action="append", default=[], metavar="NAME=WORKFLOW",
                    help="a variant; repeat for each")  # fmt: skip
    _map_args(st)
    _set_arg(st)
    _shard_arg(st)
    _metric_args(st)
    _report_args(st)
    _common(st)

    rp = sub.add_parser("report", help="tables, paired statistics, charts and pictures of a study folder")
    rp.add_argument("run_dir", type=Path, help="the study's --out folder (one subfolder per variant)")
    _metric_args(rp)
    _report_args(rp)
    rp.add_argument("-v", "--verbose", action="store_true")

    ag = sub.add_parser("aggregate", help="tabulate results again: [NAME=]RESULTS.csv or [NAME=]FOLDER ...")
    ag.add_argument("results", nargs="+", metavar="[NAME=]PATH")
    _metric_args(ag)
    ag.add_argument(
        "--reference", help="variant the others are tested against (default 'full', else the first)"
    )
    ag.add_argument("--out", type=Path, default=Path("runs/aggregate"), help="folder for study.md/.csv/.png")
    ag.add_argument("-v", "--verbose", action="store_true")
    add_dataset_parser(sub)
    return ap


def _dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "retries", 0) < 0:
        raise RunnerError(f"--retries {args.retries}: expected 0 or more")
    if args.cmd == "aggregate":
        return _aggregate(args)
    if args.cmd == "report":
        return _report(args)
    if args.cmd == "dataset":
        return run_dataset_command(args)
    template = Job(workflow={}, out_dir=args.out or Path("runs") / _default_out(args), servers=[],
                   retries=args.retries, retry_delay_s=args.retry_delay, timeout_s=args.timeout,
                   show_progress=False if args.quiet else None, previews=args.previews)  # fmt: skip
    if args.cmd == "study":
        return _study(args, template)
    # local inputs are checked before any server is contacted or started
    data = read_workflow(args.workflow)
    job = replace(template, overrides=[parse_override(s) for s in args.set], file_overrides=_files(args.file))
    rows: list[dict[str, str]] = [{}]
    if args.cmd == "run":
        job = replace(job, resume=False)
    else:
        mapping = load_mapping(args.map, args.map_file, args.manifest)
        if not mapping:
            raise RunnerError(f"no mapping from {args.manifest.name}'s columns to workflow inputs: give "
                              f"--map column=Node title.input, --map-file FILE.json, or "
                              f"{args.manifest.with_suffix('.map.json').name} beside the manifest")  # fmt: skip
        rows = read_manifest(args.manifest, mapping)
        job = replace(job, mapping=mapping, shard=parse_shard(args.shard),
                      base_dirs=[args.manifest.resolve().parent, Path.cwd()],
                      file_columns=tuple(c.strip() for c in args.file_columns.split(",") if c.strip()))  # fmt: skip
    if not is_ui_format(data):
        check_job(replace(job, workflow=data))
    with _servers(args) as servers:
        api = to_api(data, _object_info(servers) if is_ui_format(data) else None, str(args.workflow))
        report = run_job(replace(job, workflow=api, servers=servers), rows)
    if args.cmd == "run":
        _describe_run(report)
    return _finish(report)


def _study(args: argparse.Namespace, template: Job) -> int:
    study = load_study(args.study, args.manifest, args.variant, args.map, args.map_file, args.set,
                       _metrics(args), args.title)  # fmt: skip
    read_manifest(study.manifest, study.mapping)
    ui = [
        _is_ui_file(v.workflow) for v in study.variants
    ]  # also: every variant file exists and is a workflow
    template = replace(template, shard=parse_shard(args.shard), file_overrides=_files(args.file),
                       base_dirs=[study.manifest.resolve().parent, Path.cwd()])  # fmt: skip
    with _servers(args) as servers:
        template = replace(template, servers=servers)
        reports = run_study(study, template, _object_info(servers) if any(ui) else None)
    for name, r in reports.items():
        sys.stdout.write(f"{name}: {r.summary()}\n")
    code = 0 if all(r.failed == 0 for r in reports.values()) else 1
    if (
        template.shard[1] > 1
    ):  # the other shards may still be writing: one report, from the whole folder, at the end
        sys.stdout.write(f"shard {args.shard} done; when every shard has finished: cxr-runner report "
                         f"{template.out_dir}\n")  # fmt: skip
        return code
    sources = {name: r.out_dir for name, r in reports.items()}
    files = write_report(template.out_dir, sources, args.reference, study.metrics, study.title, args.pictures,
                         [study.manifest.resolve().parent, *args.images_dir], args.boot, args.by)  # fmt: skip
    _print_report(files)
    return code


def _report(args: argparse.Namespace) -> int:
    files = write_report(args.run_dir, None, args.reference, _metrics(args), args.title or "", args.pictures,
                         args.images_dir, args.boot, args.by)  # fmt: skip
    _print_report(files)
    return 0


def _print_report(files: ReportFiles) -> None:
    sys.stdout.write("\n" + files.markdown.read_text(encoding="utf-8").split("\n![")[0].rstrip() + "\n\n")
    written = [*files.tables, *files.figures, files.markdown, files.html]
    sys.stdout.write("wrote " + ", ".join(str(p) for p in written) + "\n")


def _aggregate(args: argparse.Namespace) -> int:
    sources: dict[str, Path] = {}
    for item in args.results:
        name, eq, path = item.partition("=")
        p = Path(path if eq else item)
        label = name if eq else (p.parent.name if p.suffix == ".csv" else p.name)
        if label in sources:
            raise RunnerError(f"two results are both named '{label}'; name them: NAME=PATH")
        sources[label] = p
    md, csv_path, png = write_study_report(
        sources, args.out, _metrics(args), args.title or "", args.reference
    )
    sys.stdout.write(md.read_text(encoding="utf-8") + f"\nwrote {md}, {csv_path} and {png}\n")
    return 0


def _describe_run(report: Report) -> None:
    """The files and metrics of a single run, for the person at the terminal."""
    for rec in ResultStore(report.out_dir).records():
        if rec.get("run_id") != report.run_id:
            continue
        for path in rec.get("outputs") or []:
            sys.stdout.write(f"image: {report.out_dir / path}\n")
        for m in rec.get("metrics") or []:
            figures = {
                k: v for k, v in m["record"].items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
            sys.stdout.write(f"metrics (node {m['node']}): {json.dumps(figures)}\n")
        if rec.get("error"):
            sys.stdout.write(f"error: {rec['error']}\n")


def _finish(report: Report) -> int:
    sys.stdout.write(f"{report.summary()}; results in {report.out_dir / 'results.csv'}\n")
    if report.counts["not_run"]:
        sys.stderr.write(f"{report.counts['not_run']} rows were not run: no server was left answering\n")
    return 0 if report.failed == 0 else 1


def local_server(args: argparse.Namespace, comfy: Path) -> LocalComfyServer:
    """The server --start-server starts: on the CPU, or with --gpu on the device ComfyUI picks."""
    return LocalComfyServer(comfyui_dir=comfy, python=args.comfyui_python or sys.executable,
                            extra_args=list(args.server_arg), cpu=not args.gpu)  # fmt: skip


@contextlib.contextmanager
def _servers(args: argparse.Namespace) -> Iterator[list[str]]:
    if not args.start_server:
        servers = args.server or [DEFAULT_SERVER]
        check_servers(servers)
        yield servers
        return
    if args.server:
        raise RunnerError("give either --server URL or --start-server, not both")
    comfy = args.comfyui_dir or os.environ.get("COMFYUI_DIR")
    if not comfy or not (Path(comfy) / "main.py").is_file():
        raise RunnerError(f"--start-server needs a ComfyUI checkout (with main.py) in --comfyui-dir or $COMFYUI_DIR; "
                          f"got {comfy or 'neither'}")  # fmt: skip
    server = local_server(args, Path(comfy))
    log.info("starting ComfyUI from %s", comfy)
    try:
        server.start()
    except (RuntimeError, TimeoutError) as e:
        raise RunnerError(f"could not start ComfyUI: {e}") from e
    try:
        log.info("ComfyUI is up at %s", server.base_url)
        yield [server.base_url]
    finally:
        server.stop()


def _is_ui_file(path: Path) -> bool:
    try:
        return is_ui_format(read_workflow(path))
    except WorkflowFormatError as e:
        raise RunnerError(f"study variant: {e}") from e


def _object_info(servers: list[str]) -> dict:
    return ComfyClient(servers[0], timeout_s=120.0).object_info()


def _default_out(args: argparse.Namespace) -> str:
    src = args.study if args.cmd == "study" else args.workflow
    return slug(src.stem) if src else "study"


def _files(items: list[str]) -> list[tuple[Target, Path]]:
    out = []
    for item in items:
        target, eq, path = item.partition("=")
        if not eq:
            raise RunnerError(f"--file '{item}': expected 'Node title.input=LOCAL_PATH'")
        local = Path(path).expanduser()
        if not local.is_file():
            raise RunnerError(f"--file '{item}': {local} is not a file here")
        out.append((parse_target(target), local.resolve()))
    return out


def _metrics(args: argparse.Namespace) -> list[str] | None:
    return [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reference", help="variant the others are tested against (default 'full', else the first)"
    )
    p.add_argument(
        "--pictures", type=int, default=8, metavar="N", help="rows in the picture grid (8; 0: none)"
    )
    p.add_argument("--images-dir", type=Path, action="append", default=[], metavar="DIR",
                   help="where the manifest's image paths are found for the grid (default: beside the manifest)")  # fmt: skip
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples for the 95%% intervals (2000)")
    p.add_argument("--by", action="append", default=[], metavar="COLUMN",
                   help="also the paired statistics per value of this manifest column (e.g. pathology); repeatable")  # fmt: skip


def _set_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", action="append", default=[], metavar="'TITLE.INPUT=PATH'",
                   help="upload a local file to the server's input folder and set the input to its name")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="'TITLE.INPUT=VALUE'",
                   help="set a node input by node title (or id) and input name; value parsed as JSON if it can be")  # fmt: skip


def _map_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--map", action="append", default=[], metavar="COLUMN=TITLE.INPUT",
                   help="feed a manifest column into a node input; repeat (a column may feed several inputs)")  # fmt: skip
    p.add_argument("--map-file", type=Path, help="JSON {column: 'Title.input' or [...]}")


def _shard_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard", default="0/1", metavar="I/N", help="run only rows with index %% N == I (default 0/1)"
    )


def _metric_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", help="comma-separated metric names (default: the usual ones present)")
    p.add_argument("--title", help="title of the table and chart")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", action="append", metavar="URL",
                   help=f"ComfyUI server; repeat for several, one worker each (default {DEFAULT_SERVER})")  # fmt: skip
    p.add_argument("--start-server", action="store_true", help="start a local ComfyUI for this run")
    p.add_argument("--comfyui-dir", help="ComfyUI checkout for --start-server (default $COMFYUI_DIR)")
    p.add_argument("--comfyui-python", help="Python that runs ComfyUI for --start-server (default this one)")
    p.add_argument("--gpu", action="store_true", help="--start-server without --cpu: ComfyUI uses the GPU")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra main.py argument for --start-server, e.g. --server-arg=--lowvram")  # fmt: skip
    p.add_argument("--out", type=Path, help="results folder (default runs/<workflow or study name>)")
    p.add_argument(
        "--retries", type=int, default=1, help="retries per row before it is recorded as failed (1)"
    )
    p.add_argument("--retry-delay", type=float, default=2.0, help="seconds between attempts (2)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds a prompt may take (1800)")
    p.add_argument("--previews", action="store_true", help="also fetch preview (temp) images")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
