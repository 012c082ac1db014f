"""``napari-sam2 track``: a stack and a prompts file -> a label stack, without a GUI."""

from __future__ import annotations

import argparse
import sys


def _run_track(args: argparse.Namespace) -> int:
    from napari_sam2.engine.batch import track_files
    from napari_sam2.engine.checkpoints import CheckpointError

    try:
        out = track_files(
            args.stack,
            args.prompts,
            args.output,
            config_name=args.model,
            checkpoint=args.checkpoint,
            device=args.device,
            direction=args.direction,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError, KeyError, IndexError) as exc:
        print(f"napari-sam2 track: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "track",
        help="track prompted objects through a stack without a GUI",
        description="Track the objects of a prompts file (saved by the widget: JSON or CSV with frame, "
        "object, x, y, label, boxes) through a TIFF stack or image folder; write a label TIFF (T, Y, X) "
        "with one id per object.",
    )
    p.add_argument("stack", help="TIFF/OME-TIFF stack (T, Y, X[, C]) or a folder of images")
    p.add_argument("prompts", help="prompts file (.json or .csv)")
    p.add_argument("output", help="labels TIFF to write")
    p.add_argument(
        "--model", default="sam2.1_hiera_t", help="model config, e.g. sam2.1_hiera_t, sam2_hiera_l"
    )
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the cached official one)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, mps")
    p.add_argument("--direction", default="both", choices=["forward", "backward", "both"])
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_track)


# Each entry registers one subcommand on the subparsers object.
