"""``napari-sam2 track-all``: segment everything, track every cell, write the lineage.

Every argument is checked before the model is built or a frame is computed, and OUTDIR is
refused when it holds files unless ``--overwrite`` (which replaces only the files this
command writes). Outputs, by ``--formats``:

- ``ctc/``: ``man_track.txt`` + ``maskTTT.tif`` (Cell Tracking Challenge);
- ``tracks.geff``: the graph as GEFF (zarr);
- ``tracks.csv``: one row per object and frame;
- ``labels.tif``: the label stack (T, Y, X), label = track id;

and always ``track_all.json``: the parameters, the command and a summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("ctc", "geff", "csv", "labels")
OUTPUT_NAMES = {"ctc": "ctc", "geff": "tracks.geff", "csv": "tracks.csv", "labels": "labels.tif"}
RUN_FILE = "track_all.json"


class UsageError(ValueError):
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
    from napari_sam2.engine.frames import FrameSourceError, open_frames
    from napari_sam2.engine.seeding import SeedFilter
    from napari_sam2.engine.track_all import TrackAllConfig
    from napari_sam2.engine.track_rules import DivisionRule
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
    if args.model not in available_configs():
        raise UsageError(
            f"--model {args.model!r} is not a known model; choose from {', '.join(available_configs())}"
        )
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such file")
    if args.device not in ("auto", "cpu", "mps") and not args.device.startswith("cuda"):
        raise UsageError(f"--device {args.device!r}: use auto, cpu, cuda, cuda:N or mps")
    if "geff" in formats:
        try:
            import geff  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"--formats geff needs the geff package (pip install geff): {exc}") from exc
    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"OUTDIR {outdir} exists and is not a folder")
    if outdir.is_dir() and any(outdir.iterdir()) and not args.overwrite:
        raise UsageError(
            f"OUTDIR {outdir} is not empty; choose an empty or new folder, or pass --overwrite "
            f"(which replaces only {', '.join(OUTPUT_NAMES.values())} and {RUN_FILE})"
        )
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
            drop_border_touching=not args.keep_border,
        ),
        division=DivisionRule(enabled=not args.no_divisions, persist_frames=args.division_frames),
        discover_every_frame=not args.no_discover,
    )
    return formats, config, frames


def build_engine(args: argparse.Namespace):
    """The video predictor and the mask generator (one model shared by both)."""
    from napari_sam2.engine.seeding import automatic_mask_generator_class
    from napari_sam2.engine.video_predictor import build_sam2_video_predictor

    generator_class = automatic_mask_generator_class()  # fails before any weights are loaded
    # the persistent feature cache, as `track` has it (NAPARI_SAM2_EMBEDDING_CACHE=0 turns it off)
    predictor = build_sam2_video_predictor(
        args.model, args.checkpoint, device=args.device, embedding_cache="auto"
    )
    return predictor, generator_class(predictor.model)


def write_outputs(result, formats: list[str], outdir: Path, run_info: dict) -> list[Path]:
    import json

    import numpy as np
    import tifffile

    from napari_sam2.engine import track_exports

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    if "ctc" in formats:
        written.append(track_exports.write_ctc(result.labels, result.graph, outdir / "ctc", overwrite=True))
    if "geff" in formats:
        written.append(track_exports.write_geff(result.graph, outdir / "tracks.geff", overwrite=True))
    if "csv" in formats:
        written.append(track_exports.write_csv(result.graph, outdir / "tracks.csv"))
    if "labels" in formats:
        labels = result.labels
        if labels.size and int(labels.max()) <= np.iinfo(np.uint16).max:
            labels = labels.astype(np.uint16)
        tmp = outdir / "labels.tif.part"
        tifffile.imwrite(tmp, labels, compression="zlib", photometric="minisblack", metadata={"axes": "TYX"})
        written.append(tmp.replace(outdir / "labels.tif"))
    (outdir / RUN_FILE).write_text(json.dumps(run_info, indent=2, default=str) + "\n")
    written.append(outdir / RUN_FILE)
    return written


def _run(args: argparse.Namespace) -> int:
    import dataclasses
    import datetime

    from napari_sam2 import __version__
    from napari_sam2.engine.checkpoints import CheckpointError
    from napari_sam2.engine.track_all import FrameTracked, Status, TrackAllRun

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    try:
        formats, config, frames = validate(args)
    except UsageError as exc:
        print(f"napari-sam2 track-all: {exc}", file=sys.stderr)
        return 2
    try:
        predictor, generator = build_engine(args)
    except (CheckpointError, ImportError, RuntimeError) as exc:
        frames.close()
        print(f"napari-sam2 track-all: {exc}", file=sys.stderr)
        return 2
    run = TrackAllRun(predictor, frames, generator, config)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(desc="tracking", unit="frame", file=sys.stderr)
    stopped = ""  # why the run stopped early, if it did
    events = run.events()
    try:
        for event in events:
            if isinstance(event, FrameTracked) and bar is not None:
                bar.total = event.total
                bar.update(event.done - bar.n)
            elif isinstance(event, Status) and bar is not None:
                bar.write(event.message, file=sys.stderr)
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
    for path in write_outputs(result, formats, Path(args.outdir), info):
        say(f"wrote {path}")
    summary = result.graph.summary()
    say(
        f"{summary['tracks']} tracks, {summary['divisions']} divisions, {summary['records']} objects x frames"
    )
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
    p.add_argument("outdir", help="folder for the results (new or empty, unless --overwrite)")
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
        "--keep-border",
        action="store_true",
        help="keep objects touching the frame border (default: drop them)",
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
        "--model", default="sam2.1_hiera_t", help="model config, e.g. sam2.1_hiera_t, sam2_hiera_l"
    )
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the cached official one)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps")
    p.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help=f"comma-separated outputs among {','.join(FORMATS)} (default: all)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty OUTDIR, replacing earlier results"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.set_defaults(func=_run)
