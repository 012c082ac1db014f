"""``napari-sam2 track``: a stack and a prompts file -> a label stack, without a GUI."""

from __future__ import annotations

import argparse

from ._common import add_model_arguments, parse_channels, report_error


def _run_track(args: argparse.Namespace) -> int:
    from napari_sam2.engine.batch import track_files

    try:
        model = resolve_model_arguments(args)
        out = track_files(
            args.stack,
            args.prompts,
            args.output,
            config_name=model,
            checkpoint=args.checkpoint,
            device=args.device,
            direction=args.direction,
            overwrite=args.overwrite,
            progress=not args.quiet,
            channels=args.channels,
            precision=args.precision,
            compile=args.compile,
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported in one line, with what to do
        return report_error("track", exc)
    print(f"wrote {out}")
    return 0


def resolve_model_arguments(args: argparse.Namespace) -> str:
    from napari_sam2.model.variants import resolve_variant

    return resolve_variant(args.model)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "track",
        help="track prompted objects through a stack without a GUI",
        description="Track the objects of a prompts file (saved by the widget: JSON, or CSV with frame, "
        "object, x, y, label, boxes) through a TIFF stack or image folder; write a label TIFF (T, Y, X) "
        "with one id per object. A JSON file saved by the widget also carries the frame axis, the held "
        "axes and the channels it used, and they are applied. Every argument is checked before the "
        "first frame is computed.",
    )
    p.add_argument("stack", help="TIFF/OME-TIFF stack (T, Y, X[, C]) or a folder of images")
    p.add_argument("prompts", help="prompts file (.json or .csv)")
    p.add_argument("output", help="labels TIFF to write")
    add_model_arguments(p)
    p.add_argument("--direction", default="both", choices=["forward", "backward", "both"])
    p.add_argument(
        "--channels",
        type=parse_channels,
        default=None,
        metavar="C[,C...]",
        help="the 1 to 3 channels the model sees, e.g. 0,2 (default: those saved with the prompts, "
        "else the first three)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_track)
