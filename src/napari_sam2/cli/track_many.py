"""``napari-sam2 track-many``: many stacks, each with its prompts, on a dask.distributed cluster.

Jobs come from a manifest (CSV/JSON: stack, prompts, output, per-job options) or a folder
(``NAME.tif`` + ``NAME.prompts.json`` -> ``OUTPUT_DIR/NAME.tif``); see
:mod:`napari_sam2.engine.batch.manifest`. Every job is checked before anything starts; complete
outputs are skipped; a failing stack is reported and the others go on. Exit status: 0 when
every job is done or was complete, 1 when some failed, 2 when nothing could start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_model_arguments, add_tracking_arguments, report_error

DESCRIPTION = (
    "Track many stacks, each with its own prompts files, on a dask.distributed cluster: by default a "
    "local cluster of worker processes on this machine, or a running one with --scheduler (e.g. a "
    "dask-jobqueue SLURM/PBS cluster). One task per stack, one model per worker, a progress bar. SOURCE "
    "is a manifest (.csv with columns stack,prompts,output and optional per-job options "
    "channels,direction,frame_axis,all_positions,window,labels_name; or .json, a list of such objects) or "
    "a folder holding stacks NAME.tif / NAME.ome.tif / NAME.zarr / NAME.nii(.gz) / NAME/ with their prompts "
    "NAME.prompts.json (several positions: NAME.prompts.<anything>.json), whose labels go to "
    "OUTPUT_DIR/NAME<suffix>. Every job is checked before anything is computed; stacks whose output is "
    "complete (labels + a NAME.done.json record of the same inputs) are skipped, those made from earlier "
    "inputs and untouched since are redone; a stack that fails is "
    "reported and the others go on. Exit status: 0 all done, 1 some failed, 2 nothing started."
)


def _jobs(args: argparse.Namespace):
    from napari_sam2.engine.batch.manifest import ManifestError, jobs_from_folder, load_manifest

    defaults = {
        "channels": args.channels,
        "direction": args.direction,
        "frame_axis": args.frame_axis,
        "all_positions": args.all_positions or None,
        "window": args.window,
        "labels_name": args.labels_name,
    }
    defaults = {k: v for k, v in defaults.items() if v is not None}
    source = Path(args.source).expanduser()
    if source.is_dir():
        from napari_sam2.engine.io import label_format

        label_format("labels" + args.output_format)  # an unknown format fails now
        jobs, unprompted = jobs_from_folder(source, args.output_dir, args.output_format, defaults)
        if unprompted and not args.quiet:
            print(
                f"{len(unprompted)} stack(s) without a prompts file are left out: {', '.join(unprompted[:10])}"
                + (" ..." if len(unprompted) > 10 else ""),
                file=sys.stderr,
            )
        return jobs
    if args.output_dir is not None:
        raise ManifestError("--output-dir is for a folder of stacks; a manifest names each output")
    return load_manifest(source, defaults)


def _model(args: argparse.Namespace):
    from napari_sam2.engine.track.session import ModelSpec
    from napari_sam2.model.variants import resolve_variant

    return ModelSpec(resolve_variant(args.model), args.checkpoint, args.device, args.precision, args.compile)


def _dry_run(jobs, spec, overwrite: bool) -> int:
    from napari_sam2.engine.batch.distributed import model_key, validate_jobs

    to_run, results = validate_jobs(jobs, model_key(spec), overwrite)
    for i, job in enumerate(jobs):
        if i in to_run:
            print(f"{'redo' if to_run[i] and not overwrite else 'run':<8}{job.stack} -> {job.output}")
        else:
            print(f"{results[i].status:<8}{job.stack}: {results[i].message}")
    print(f"{len(to_run)} to run, {len(jobs) - len(to_run)} not (dry run: nothing computed)")
    return 2 if any(r.status == "invalid" for r in results.values()) else 0


def _run(args: argparse.Namespace) -> int:
    from napari_sam2.engine.batch.distributed import BatchValidationError, track_many

    try:
        jobs = _jobs(args)
        spec = _model(args)
        if args.dry_run:
            return _dry_run(jobs, spec, args.overwrite)

        def show(result) -> None:
            # each problem once, as it arrives (tqdm.write keeps the progress bar whole)
            if result.status in ("invalid", "failed"):
                from tqdm import tqdm

                tqdm.write(f"{result.status}: {result.job.stack}: {result.message}", file=sys.stderr)

        report = track_many(
            jobs,
            model=spec,
            scheduler=args.scheduler,
            n_workers=args.workers,
            resources={"GPU": 1} if args.gpu_resources else None,
            overwrite=args.overwrite,
            skip_invalid=args.skip_invalid,
            progress=not args.quiet,
            on_result=show,
            torch_threads=args.torch_threads,
        )
    except BatchValidationError as exc:
        print(f"napari-sam2 track-many: {exc}", file=sys.stderr)
        print("fix these jobs, or pass --skip-invalid to run the others", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - every failure is reported in one line, with what to do
        return report_error("track-many", exc)
    written = _write_report(report, jobs, args)
    print(f"napari-sam2 track-many: {report.summary()}" + (f"; report in {written}" if written else ""))
    return 0 if report.ok else 1


def _report_path(jobs, args: argparse.Namespace) -> Path:
    """--report, else a new file in the output folder (the outputs' common folder), named by the time.

    Timestamped so that an earlier run's report is never replaced."""
    import os
    import time

    if args.report:
        return Path(args.report).expanduser()
    parents = [str(Path(j.output).expanduser().resolve().parent) for j in jobs]
    try:
        folder = Path(os.path.commonpath(parents)) if parents else Path.cwd()
    except ValueError:  # outputs on different drives
        folder = Path(parents[0])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"track-many-report-{stamp}.csv"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"track-many-report-{stamp}-{n}.csv"
    return path


def _write_report(report, jobs, args: argparse.Namespace) -> Path | None:
    """One row per job (stack, output, status, message, ...): what was done and what failed."""
    path = _report_path(jobs, args)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return report.to_csv(path)
    except OSError as e:  # the labels are written: a report that cannot be is said, not fatal
        print(
            f"napari-sam2 track-many: could not write the report {path} ({e.strerror or e}); "
            "pass --report PATH to write it elsewhere",
            file=sys.stderr,
        )
        return None


def _suffix(text: str) -> str:
    return text if text.startswith(".") else "." + text


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "track-many", help="track many stacks on a local or running dask cluster", description=DESCRIPTION
    )
    p.add_argument(
        "source", help="manifest (.csv or .json), or a folder of stacks with NAME.prompts.json files"
    )
    p.add_argument(
        "--output-dir",
        default=None,
        metavar="DIR",
        help="for a folder SOURCE: where the labels go (default SOURCE/labels)",
    )
    p.add_argument(
        "--output-format",
        type=_suffix,
        default=".tif",
        metavar="SUFFIX",
        help="for a folder SOURCE: .tif (default), .ome.tif, .zarr, .nii or .nii.gz",
    )
    add_model_arguments(p)
    add_tracking_arguments(p, per_job=True)
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="address of a running dask scheduler, e.g. tcp://10.0.0.5:8786 (default: start a local cluster)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of the local cluster (default: one per GPU, else one per 4 CPU cores)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads torch uses in each worker (default: the local cluster shares this machine's cores "
        "out; workers of your own cluster keep dask's one thread: give their cores here)",
    )
    p.add_argument(
        "--gpu-resources",
        action="store_true",
        help="each stack needs one unit of the workers' GPU resource (start your workers with "
        "--resources GPU=1; the local cluster declares it)",
    )
    p.add_argument("--overwrite", action="store_true", help="recompute every stack and replace its output")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="run the valid jobs when some cannot run (default: start nothing and list the problems)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="check every job and say what would run; compute nothing"
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="CSV",
        help="where to write the report, one row per job (status, message, time); default: "
        "track-many-report-<date>-<time>.csv in the output folder",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
