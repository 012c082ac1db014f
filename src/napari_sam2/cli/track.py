"""``napari-sam2 track``: a stack and its prompts file(s) -> a label stack, without a GUI."""

from __future__ import annotations

import argparse

from ._common import (
    add_cache_arguments,
    add_model_arguments,
    add_tracking_arguments,
    cache_from_args,
    cache_summary,
    report_error,
)

INPUTS_HELP = (
    "TIFF / OME-TIFF stack, folder of images (.tif .png .jpg), OME-Zarr image (.zarr), NIfTI (.nii, "
    ".nii.gz) or folder holding one DICOM series"
)
OUTPUTS_HELP = (
    "labels file, format by suffix: .tif (ImageJ hyperstack), .ome.tif, .zarr (a new OME-Zarr label image; "
    "the input .zarr itself: labels/NAME inside it), .nii / .nii.gz (in the input's space)"
)


def _run_track(args: argparse.Namespace) -> int:
    from napari_sam2.engine.batch.track_stack import track_files

    try:
        model = resolve_model_arguments(args)
        cache = cache_from_args(args)
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
            frame_axis=args.frame_axis,
            all_positions=args.all_positions,
            window=args.window,
            labels_name=args.labels_name,
            embedding_cache=cache,
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported in one line, with what to do
        return report_error("track", exc)
    print(f"wrote {out}")
    if not args.quiet:
        print(cache_summary(cache))
    return 0


def resolve_model_arguments(args: argparse.Namespace) -> str:
    from napari_sam2.model.variants import resolve_variant

    return resolve_variant(args.model)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "track",
        help="track prompted objects through a stack without a GUI",
        description="Track the objects of a prompts file (saved by the widget: JSON, or CSV with frame, "
        "object, x, y, label, boxes) through a stack; write the labels (one id per object) in the format "
        "OUTPUT's suffix names, with the input's axes, pixel size and orientation. Inputs: "
        + INPUTS_HELP
        + ". A JSON file saved by the widget also carries the frame axis, the held axes and the channels it "
        "used, and they are applied. An image with more axes than one sequence, e.g. (T, Z, Y, X) tracked "
        "along z, is tracked position by position: give one JSON prompts file per position (each knows where "
        "it was saved), or one file with --all-positions; the labels have the input's full shape. Every "
        "argument is checked before the first frame is computed.",
    )
    p.add_argument("stack", help=INPUTS_HELP)
    p.add_argument(
        "prompts",
        nargs="+",
        help="prompts file(s) (.json or .csv); several: one per position of a 3D+t stack",
    )
    p.add_argument("output", help=OUTPUTS_HELP)
    add_model_arguments(p)
    add_tracking_arguments(p)
    add_cache_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT (or labels/NAME) if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_track)
