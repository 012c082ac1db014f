"""A widget run and a CLI run on the same image and prompts file give the same masks.

The annotator (the widget without Qt) and ``napari-sam2 track`` both run the real model
(SAM 2.1 tiny test weights) on a 2-channel (T, C, Y, X) stack with the channels chosen as
(1, 0). Prompts are added one by one with a preview after each (as with live preview), one
of them is removed again, and the objects are propagated; the saved prompts file carries
the axes and channels, and the CLI must give the widget's labels exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam2.plugin.sample_data import synthetic_timelapse

pytestmark = pytest.mark.slow


def test_widget_and_cli_give_the_same_masks(tiny_checkpoint, tmp_path):
    from napari.components import ViewerModel

    from napari_sam2.cli import main
    from napari_sam2.plugin.annotator import Annotator

    image, truth = synthetic_timelapse(n_frames=3, shape=(64, 64), n_cells=3, seed=1)
    second = np.clip(image.astype(np.int32)[:, ::-1, :] // 2 + 200, 0, 65535).astype(np.uint16)
    stack = np.stack([image, second], axis=1)  # (T, C, Y, X)
    viewer = ViewerModel()
    viewer.add_image(stack, name="2ch")
    sam = Annotator(viewer, synchronous=True)
    sam.set_image("2ch", axis=0, channel_axis=1, channels=(1, 0))
    sam.set_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, device="cpu")
    cells = [c for c in np.unique(truth[0]) if c]
    for obj, cell in enumerate(cells[:2], start=1):
        ys, xs = np.nonzero(truth[0] == cell)
        sam.add_point(0, obj, y=float(ys.mean()), x=float(xs.mean()))
        sam.preview()  # each click previewed, as with live preview
        assert sam.last_error is None, sam.last_error
    ys, xs = np.nonzero(truth[0] == cells[0])
    sam.add_point(0, 1, y=float(ys.min()) + 1, x=float(xs.min()) + 1, positive=False)
    sam.preview()
    pts = sam.points_layer()
    pts.selected_data = {len(pts.data) - 1}
    pts.remove_selected()  # ... and the negative click removed again
    layer = sam.propagate("both")
    assert sam.last_error is None, sam.last_error
    widget_labels = np.asarray(layer.data[:, 0])  # the shared channel plane
    assert len(np.unique(widget_labels)) > 1
    prompts = sam.save_prompts(tmp_path / "prompts.json")

    tifffile.imwrite(tmp_path / "2ch.tif", stack, imagej=True, metadata={"axes": "TCYX"})
    out = tmp_path / "labels.tif"
    args = ["track", str(tmp_path / "2ch.tif"), str(prompts), str(out)]
    args += ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--quiet"]
    assert main(args) == 0
    np.testing.assert_array_equal(tifffile.imread(out), widget_labels)
