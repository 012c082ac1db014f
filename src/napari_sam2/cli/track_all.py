"""``napari-sam2 track-all``: segment everything, track every cell, write the lineage.

Every argument is checked before the model is built or a frame is computed, OUTDIR included
(:func:`preflight`: a folder you can write to, none of this command's outputs in it unless
``--overwrite``, which replaces only the files this command writes). Outputs, by ``--formats``,
written by :func:`napari_sam2.engine.cells.track_exports.export_tracking`:

- ``ctc/``: ``res_track.txt`` + ``maskTTT.tif`` (a Cell Tracking Challenge result folder);
- ``tracks.geff``: the graph as GEFF (zarr);
- ``tracks.csv``: one row per object and frame;
- ``labels.tif``: the label stack (T, Y, X), label = track id;

and always ``track_all.json``: the parameters, the command and a summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_sam2.errors import NapariSam2Error

from ._common import add_cache_arguments, cache_from_args, cache_summary

FORMATS = ("ctc", "geff", "csv", "labels")  # = track_exports.EXPORT_FORMATS (kept here: no engine import)
RUN_FILE = "track_all.json"


class UsageError(NapariSam2Error, ValueError):
    """A bad argument, named with its option."""


def _formats(text: str) -> list[str]:
    wanted = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        raise UsageError(
            f"--formats: unknown format(s) {unknown or text!r}; choose from {', '.join(FORMATS)}"
        )
    return list(dict.fromkeys(wanted))


def validate(args: argparse.Namespace):
    """Check every argument; returns ``(formats, config, frames)``. Raises UsageError."""
    from napari_sam2.engine.cells.seeding import SeedFilter
    from napari_sam2.engine.cells.track_all import TrackAllConfig
    from napari_sam2.engine.cells.track_rules import DivisionRule
    from napari_sam2.engine.frames.open import FrameSourceError, open_frames
    from napari_sam2.model.config import available_configs

    formats = _formats(args.formats)
    checks = [
        (args.every >= 0, "--every must be >= 0 (0: segment everything on the start frame only)"),
        (args.lost_after >= 1, "--lost-after must be >= 1 frame"),
        (args.min_area >= 1, "--min-area must be >= 1 pixel"),
        (args.max_area is None or args.max_area >= args.min_area, "--max-area must be >= --min-area"),
        (0.0 < args.match_iou <= 1.0, "--match-iou must be in (0, 1]"),
        (args.division_frames >= 1, "--division-frames must be >= 1"),
        (args.start_frame >= 0, "--start-frame must be >= 0"),
        (
            args.end_frame is None or args.end_frame >= args.start_frame,
            "--end-frame must be >= --start-frame",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    if args.instance_head is not None:
        _head_defaults(args)
    if args.model is None:
        args.model = "sam2.1_hiera_t"
    if args.model not in available_configs():
        raise UsageError(
            f"--model {args.model!r} is not a known model; choose from {', '.join(available_configs())}"
        )
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such file")
    if args.device not in ("auto", "cpu", "mps") and not args.device.startswith("cuda"):
        raise UsageError(f"--device {args.device!r}: use auto, cpu, cuda, cuda:N or mps")
    preflight(Path(args.outdir), formats, overwrite=args.overwrite)
    try:
        frames = open_frames(args.stack)
    except (FrameSourceError, FileNotFoundError) as exc:
        raise UsageError(f"STACK: {exc}") from exc
    last = len(frames) - 1
    if args.start_frame > last or (args.end_frame is not None and args.end_frame > last):
        raise UsageError(
            f"--start-frame/--end-frame must lie in 0 .. {last} (the stack has {last + 1} frames)"
        )
    config = TrackAllConfig(
        start_frame=args.start_frame,
        end_frame=args.end_frame,
        reseed_every=args.every,
        lost_after=args.lost_after,
        match_iou=args.match_iou,
        seed_filter=SeedFilter(
            min_area=args.min_area,
            max_area=args.max_area,
            min_score=args.min_score,
            drop_border_touching=args.drop_border,
        ),
        division=DivisionRule(enabled=not args.no_divisions, persist_frames=args.division_frames),
        discover_every_frame=not args.no_discover,
    )
    return formats, config, frames


def _head_defaults(args: argparse.Namespace) -> None:
    """Read ``--instance-head``'s file now (before the model loads) and take the variant and the
    checkpoint it was trained on where ``--model`` / ``--checkpoint`` are not given: the head
    reads those features and no others."""
    from napari_sam2.engine.segment.instance_head import load_instance_head

    try:
        _, info = load_instance_head(args.instance_head)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--instance-head: {exc}") from exc
    trained_on = info.get("model")
    if args.model is None:
        args.model = trained_on
    elif trained_on is not None and args.model != trained_on:
        raise UsageError(
            f"--instance-head {Path(args.instance_head).name} reads the features of {trained_on}, not of "
            f"--model {args.model}: leave out --model (the head's variant is taken) or train a head for {args.model}"
        )
    ckpt = info.get("checkpoint")
    if args.checkpoint is None and ckpt is not None:
        if not Path(ckpt).is_file():
            raise UsageError(
                f"--instance-head {Path(args.instance_head).name} was trained with the checkpoint {ckpt}, "
                "which is not there any more: pass that checkpoint's new path with --checkpoint"
            )
        args.checkpoint = ckpt


def preflight(outdir: Path, formats: list[str], *, overwrite: bool = False) -> None:
    """Fail now, before the model loads, if the outputs could not be written at the end: OUTDIR
    under a file or read-only, an earlier output there without ``--overwrite``, GEFF without geff."""
    from napari_sam2.engine.cells.track_exports import OutputError, check_export

    try:
        check_export(outdir, formats, overwrite=overwrite, extra=[RUN_FILE])
    except ImportError as exc:
        raise UsageError(f"--formats geff: {exc}") from exc
    except OutputError as exc:
        raise UsageError(
            f"OUTDIR: {str(exc).replace('overwrite=True (--overwrite)', '--overwrite')}"
        ) from exc


def build_engine(args: argparse.Namespace):
    """The video predictor and the mask generator (one model shared by both): segment
    everything, or the instance head of ``--instance-head``."""
    from napari_sam2.engine.cells.seeding import automatic_mask_generator_class
    from napari_sam2.engine.predict.video_predictor import build_sam2_video_predictor

    if args.instance_head is None:
        generator_class = automatic_mask_generator_class()  # fails before any weights are loaded
    else:
        from napari_sam2.engine.segment.instance_head import InstanceHeadGenerator as generator_class
    # the persistent feature cache, as `track` has it (--no-cache or NAPARI_SAM2_EMBEDDING_CACHE=0: off)
    predictor = build_sam2_video_predictor(
        args.model, args.checkpoint, device=args.device, embedding_cache=cache_from_args(args)
    )
    if args.instance_head is None:
        return predictor, generator_class(predictor.model)
    return predictor, generator_class(predictor.model, args.instance_head)


def write_outputs(
    result, formats: list[str], outdir: Path, run_info: dict, *, overwrite: bool = False
) -> list[Path]:
    """The run's outputs (one export function for the CLI, the widget and scripts) and its record."""
    import json

    from napari_sam2.engine.cells.track_exports import export_tracking
    from napari_sam2.engine.io._files import write_text

    written = list(
        export_tracking(result.labels, result.graph, outdir, formats, overwrite=overwrite).values()
    )
    text = json.dumps(run_info, indent=2, default=str) + "\n"
    written.append(write_text(outdir / RUN_FILE, text, overwrite=overwrite))
    return written


def _run(args: argparse.Namespace) -> int:
    import dataclasses
    import datetime

    from napari_sam2 import __version__
    from napari_sam2.engine.cells.track_all import (
        FrameTracked,
        NoSeedsError,
        Status,
        Total,
        TrackAllRun,
        TrackStarted,
    )
    from napari_sam2.engine.weights.checkpoints import CheckpointError

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    if args.keep_border:
        print(
            "napari-sam2 track-all: --keep-border is the default now and does nothing (cells touching "
            "the border are kept); use --drop-border to drop them",
            file=sys.stderr,
        )
    try:
        formats, config, frames = validate(args)
    except UsageError as exc:
        print(f"napari-sam2 track-all: {exc}", file=sys.stderr)
        return 2
    try:
        predictor, generator = build_engine(args)
    except (CheckpointError, ImportError, RuntimeError, ValueError, OSError) as exc:
        frames.close()
        print(f"napari-sam2 track-all: {exc}", file=sys.stderr)
        return 2
    run = TrackAllRun(predictor, frames, generator, config)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(desc="tracking", unit="frame", file=sys.stderr)
    stopped = ""  # why the run stopped early, if it did
    found = 0  # cells found so far (progress)
    events = run.events()
    try:
        for event in events:
            if bar is None:
                continue
            if isinstance(event, Total):
                bar.total = event.frames
                bar.refresh()
            elif isinstance(event, TrackStarted) and event.reason != "division":
                found += 1  # a cell found: seeded, discovered or re-seeded (daughters are not "found")
            elif isinstance(event, FrameTracked):
                # frames done/total (the bar), cells on the frame, cells found so far, tracks so far
                bar.set_postfix(cells=event.cells, found=found, tracks=event.tracks, refresh=False)
                bar.update(event.done - bar.n)
            elif isinstance(event, Status):
                bar.write(event.text, file=sys.stderr)
    except NoSeedsError as exc:  # seeding kept nothing: stop before tracking, write nothing
        events.close()
        if bar is not None:
            bar.close()
        frames.close()
        print(f"napari-sam2 track-all: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        stopped = "interrupted"
    except Exception as exc:  # noqa: BLE001 - the frames tracked so far are still worth writing
        stopped = f"failed: {type(exc).__name__}: {exc}"
    finally:
        events.close()  # keeps every frame tracked so far
        if bar is not None:
            bar.close()
        frames.close()
    result = run.result()
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "version": __version__,
        "arguments": {k: v for k, v in vars(args).items() if k != "func"},
        "config": dataclasses.asdict(config),
        "frames_tracked": [result.first_frame, result.last_frame],
        "stopped": stopped,
        "summary": result.graph.summary(),
    }
    from napari_sam2.engine.cells.track_exports import OutputError

    try:
        written = write_outputs(result, formats, Path(args.outdir), info, overwrite=args.overwrite)
    except OutputError as exc:  # checked before the run; something changed in OUTDIR meanwhile
        print(f"napari-sam2 track-all: the results could not be written: {exc}", file=sys.stderr)
        return 1
    for path in written:
        say(f"wrote {path}")
    summary = result.graph.summary()
    say(
        f"{summary['tracks']} tracks, {summary['divisions']} divisions, {summary['records']} objects x frames"
    )
    say(cache_summary(getattr(predictor, "embedding_cache", None)))
    if stopped:
        print(
            f"napari-sam2 track-all: {stopped}; frames {result.first_frame}..{result.last_frame} "
            "were tracked and written",
            file=sys.stderr,
        )
        return 130 if stopped == "interrupted" else 1
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "track-all",
        help="segment everything and track every cell, with divisions (CTC, GEFF, CSV)",
        description="Segment everything on the start frame, track every object through the stack, "
        "segment everything again every N frames to add cells that entered, end tracks of lost cells "
        "and detect divisions; write the lineage as Cell Tracking Challenge files, GEFF, CSV and a label stack.",
    )
    p.add_argument("stack", help="TIFF/OME-TIFF stack (T, Y, X[, C]) or a folder of images")
    p.add_argument(
        "outdir",
        help="folder for the results (other files in it are left alone; earlier results need --overwrite)",
    )
    p.add_argument(
        "--every",
        type=int,
        default=10,
        metavar="N",
        help="segment everything again every N frames (0: never; default 10)",
    )
    p.add_argument(
        "--lost-after",
        type=int,
        default=3,
        metavar="K",
        help="end a track after K frames without its object (default 3)",
    )
    p.add_argument("--min-area", type=int, default=16, help="smallest object in pixels (default 16)")
    p.add_argument("--max-area", type=int, default=None, help="largest object in pixels (default: no limit)")
    p.add_argument(
        "--min-score", type=float, default=0.0, help="lowest mask score (predicted IoU) kept (default 0)"
    )
    p.add_argument(
        "--drop-border",
        action="store_true",
        help="drop objects touching the frame border (default: keep them, as the Cell Tracking "
        "Challenge's ground truth tracks cells entering the field)",
    )
    p.add_argument(
        "--keep-border",
        action="store_true",
        help="deprecated: keeping cells on the border is the default; does nothing",
    )
    p.add_argument(
        "--match-iou",
        type=float,
        default=0.5,
        help="IoU at which a re-seeded mask is a tracked object (default 0.5)",
    )
    p.add_argument(
        "--division-frames",
        type=int,
        default=3,
        help="frames a split must persist to be a division (default 3)",
    )
    p.add_argument("--no-divisions", action="store_true", help="do not detect divisions")
    p.add_argument(
        "--no-discover",
        action="store_true",
        help="do not look for new cells on every frame where no tracked cell is "
        "(default: look; then new cells are found on their first frame and --every is a safety net)",
    )
    p.add_argument("--start-frame", type=int, default=0, help="frame to seed and start from (default 0)")
    p.add_argument("--end-frame", type=int, default=None, help="last frame to track (default: the last)")
    p.add_argument(
        "--model",
        default=None,
        help="model config, e.g. sam2.1_hiera_t, sam2_hiera_l (default sam2.1_hiera_t, or the instance head's)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file (default: the cached official one, or the one the instance head was trained with)",
    )
    p.add_argument(
        "--instance-head",
        default=None,
        metavar="HEAD",
        help="find the cells with this instance head (napari-sam2 train --instance-head-steps writes "
        "OUTPUT.instance-head.pt): one pass per frame instead of segment everything's point grid, for the "
        "seeds, the re-seeds and the new cells",
    )
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps")
    add_cache_arguments(p)
    p.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help=f"comma-separated outputs among {','.join(FORMATS)} (default: all)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace earlier results in OUTDIR (only the files this command writes: ctc/'s CTC files, "
        "tracks.geff, tracks.csv, labels.tif, track_all.json)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.set_defaults(func=_run)
