"""``napari-sam2 track-all``'s progress: frames done/total, cells on the frame, cells found so far.

With every-frame discovery a cell entering the field is found as it comes; the bar says how
many cells the run has found (seeded, discovered or re-seeded; daughters of a division are
not "found"). The model is replaced by the ground-truth stand-ins (``build_engine``
monkeypatched), as in tests/test_cli_track_all.py.
"""

from __future__ import annotations

import json
import re

import tifffile
from fakes import GroundTruthMaskGenerator, GroundTruthPredictor

from napari_sam2.cli import main
from napari_sam2.cli import track_all as cli


def test_progress_says_frames_done_of_total_and_cells_found(tmp_path, monkeypatch, capsys):
    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    image, labels, truth = synthetic_lineage_timelapse(
        n_frames=24, shape=(128, 128), n_cells=5, n_divisions=1, n_entering=2, n_leaving=1, seed=1
    )
    stack = tmp_path / "movie.tif"
    tifffile.imwrite(stack, image)
    monkeypatch.setattr(
        cli,
        "build_engine",
        lambda args: (GroundTruthPredictor(labels), GroundTruthMaskGenerator(image, labels)),
    )
    out = tmp_path / "out"
    rc = main(["track-all", str(stack), str(out), "--every", "0", "--formats", "csv"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "24/24" in err
    found = [int(n) for n in re.findall(r"found=(\d+)", err)]
    assert found and "cells=" in err and "tracks=" in err
    assert found == sorted(found)  # a running count
    # the cells found: the 5 of frame 0 and the 2 entering ones, each by discovery (no re-seed)
    entering = int(((truth[:, 1] > 0) & (truth[:, 3] == 0)).sum())
    assert entering == 2 and found[-1] == 5 + entering
    assert len(re.findall(r"new objects found in uncovered foreground", err)) == entering
    summary = json.loads((out / "track_all.json").read_text())["summary"]
    assert summary["tracks"] == found[-1] + 2 * summary["divisions"]
