"""``napari-sam2 demo``: napari with the synthetic time-lapse and the SAM 2 widget docked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PLUGIN_NAME = "napari-sam2"
WIDGET_NAME = "SAM 2 Segment & Track"


#: the demo window: wide enough for the dock beside a canvas that shows the whole image
WINDOW_SIZE = (1500, 950)


def open_demo(
    n_frames: int = 40, seed: int = 0, dock_widget: bool = True, show: bool = True, sample: str = "timelapse"
):
    """Open a napari viewer with a synthetic time-lapse (and its ground truth) loaded and the
    SAM 2 widget docked; ``sample`` is "timelapse" (a few cells to click) or "lineage"
    (dividing, entering and leaving cells, for "Track all cells"). Returns the viewer; the
    caller runs or closes it."""
    import napari
    from napari.layers import Layer

    from napari_sam2.plugin.sample_data import _layers, synthetic_timelapse

    viewer = napari.Viewer(title="napari-sam2 demo", show=show)
    viewer.window.resize(*WINDOW_SIZE)
    if sample == "lineage":
        from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

        image, labels, _ = synthetic_lineage_timelapse(n_frames=n_frames, seed=seed)
        name = "synthetic dividing cells"
    else:
        image, labels = synthetic_timelapse(n_frames=n_frames, seed=seed)
        name = "synthetic time-lapse"
    for data, meta, layer_type in _layers(image, labels, name):
        viewer.add_layer(Layer.create(data, meta, layer_type))
    viewer.layers.selection.active = viewer.layers[name]
    viewer.dims.set_current_step(0, 0)  # start on the first frame
    if dock_widget:
        dock_sam2(viewer)
    return viewer


def dock_sam2(viewer):
    """Dock the widget, then fit the image into the canvas that is left beside it."""
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # let the dock take its width before the view is fitted
    viewer.reset_view()
    return dock, widget


def _run_demo(args: argparse.Namespace) -> int:
    import napari

    viewer = open_demo(n_frames=args.frames, seed=args.seed, dock_widget=False, sample=args.sample)
    if not args.no_widget:
        try:
            dock_sam2(viewer)
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


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="open napari with a synthetic cell time-lapse and the SAM 2 widget",
        description="Open napari with the synthetic cell time-lapse loaded and the "
        "'SAM 2 Segment & Track' widget docked.",
    )
    p.add_argument("--frames", type=int, default=40, metavar="N", help="number of time points (default 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    p.add_argument(
        "--sample",
        choices=["timelapse", "lineage"],
        default="timelapse",
        help="timelapse: a few cells to click (default); lineage: dividing cells for 'Track all cells'",
    )
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
