"""Command line entry point: ``napari-sam2 <command>`` (also ``python -m napari_sam2``).

Kept thin on purpose: each subcommand is a small ``add_<name>_parser`` function that
registers its arguments and sets ``func``; ``main`` only parses and dispatches. To add
a subcommand, write such a function and append it to ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

PLUGIN_NAME = "napari-sam2"
WIDGET_NAME = "SAM 2 Segment & Track"


def open_demo(n_frames: int = 40, seed: int = 0, dock_widget: bool = True, show: bool = True):
    """Open a napari viewer with the synthetic time-lapse (and its ground truth) loaded
    and the SAM 2 widget docked. Returns the viewer; the caller runs or closes it."""
    import napari
    from napari.layers import Layer

    from napari_sam2.plugin.sample_data import _layers, synthetic_timelapse

    viewer = napari.Viewer(title="napari-sam2 demo", show=show)
    image, labels = synthetic_timelapse(n_frames=n_frames, seed=seed)
    for data, meta, layer_type in _layers(image, labels, "synthetic time-lapse"):
        viewer.add_layer(Layer.create(data, meta, layer_type))
    viewer.layers.selection.active = viewer.layers["synthetic time-lapse"]
    viewer.dims.set_current_step(0, 0)  # start on the first frame
    if dock_widget:
        viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)
    return viewer


def _run_demo(args: argparse.Namespace) -> int:
    import napari

    viewer = open_demo(n_frames=args.frames, seed=args.seed, dock_widget=False)
    if not args.no_widget:
        try:
            viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)
        except Exception as exc:  # noqa: BLE001 - a broken or missing install: say so instead of a Qt traceback
            viewer.close()
            print(
                f"napari-sam2: could not dock the {WIDGET_NAME!r} widget: {exc}\n"
                "Is napari-sam2 installed (python3 -m pip install '.[qt]')? "
                "Use --no-widget to open the data alone.",
                file=sys.stderr,
            )
            return 1
    if args.screenshot is not None:
        from qtpy.QtWidgets import QApplication

        QApplication.processEvents()
        path = Path(args.screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(path), canvas_only=False)
        print(f"saved screenshot to {path}")
    if args.no_run or args.screenshot is not None:
        viewer.close()
        return 0
    napari.run()
    return 0


def add_demo_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="open napari with a synthetic cell time-lapse and the SAM 2 widget",
        description="Open napari with the synthetic cell time-lapse loaded and the "
        "'SAM 2 Segment & Track' widget docked.",
    )
    p.add_argument("--frames", type=int, default=40, metavar="N", help="number of time points (default 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    p.add_argument("--no-widget", action="store_true", help="do not dock the SAM 2 widget")
    p.add_argument(
        "--no-run", action="store_true", help="set everything up, then close instead of running napari"
    )
    p.add_argument(
        "--screenshot",
        metavar="PATH",
        default=None,
        help="save a screenshot of the whole window to PATH (PNG), then close (implies --no-run)",
    )
    p.set_defaults(func=_run_demo)


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


def add_track_parser(subparsers) -> None:
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
SUBCOMMANDS: list[Callable] = [add_demo_parser, add_track_parser]


def build_parser() -> argparse.ArgumentParser:
    from napari_sam2 import __version__

    parser = argparse.ArgumentParser(
        prog="napari-sam2",
        description="SAM 2 segmentation and tracking for napari.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
