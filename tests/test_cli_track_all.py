"""``napari-sam2 track-all``: arguments checked before any work, outputs written end to end.

The model is replaced by the ground-truth stand-ins (``build_engine`` monkeypatched): the
command's own logic (validation, run, files) is what is tested here.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import tifffile
from fakes import GroundTruthMaskGenerator, GroundTruthPredictor

from napari_sam2.cli import main
from napari_sam2.cli import track_all as cli


@pytest.fixture(scope="module")
def movie():
    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    return synthetic_lineage_timelapse(
        n_frames=24, shape=(128, 128), n_cells=5, n_divisions=1, n_entering=1, n_leaving=1, seed=1
    )


@pytest.fixture()
def stack(tmp_path, movie):
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, movie[0])
    return path


@pytest.fixture()
def standin(monkeypatch, movie):
    image, labels, _ = movie
    built = []

    def build_engine(args):
        built.append(args)
        return GroundTruthPredictor(labels), GroundTruthMaskGenerator(image, labels)

    monkeypatch.setattr(cli, "build_engine", build_engine)
    return built


def test_end_to_end_with_the_standin(stack, tmp_path, standin, capsys, movie):
    pytest.importorskip("traccuracy")
    from traccuracy.loaders import load_ctc_data

    out = tmp_path / "out"
    rc = main(["track-all", str(stack), str(out), "--every", "1", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert len(standin) == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "ctc",
        "labels.tif",
        "track_all.json",
        "tracks.csv",
        "tracks.geff",
    ]
    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == movie[1].shape and labels.dtype == np.uint16
    info = json.loads((out / "track_all.json").read_text())
    assert info["frames_tracked"] == [0, 23] and info["config"]["reseed_every"] == 1
    assert info["config"]["seed_filter"]["drop_border_touching"] is False
    _, _, truth = movie
    assert info["summary"]["divisions"] == 1 == int((np.bincount(truth[:, 3])[1:] == 2).sum())
    assert (out / "ctc" / "res_track.txt").is_file()  # a CTC result folder, as the challenge's scorer reads
    loaded = load_ctc_data(str(out / "ctc"), run_checks=True)
    assert loaded.graph.number_of_nodes() == info["summary"]["records"]
    assert (out / "tracks.csv").read_text().count("\n") == info["summary"]["records"] + 1


def test_formats_subset_and_overwrite_keeps_other_files(stack, tmp_path, standin, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert (
        main(["track-all", str(stack), str(out), "--formats", "csv", "--quiet"]) == 0
    )  # beside the user's file
    assert len(standin) == 1
    # a second run would replace tracks.csv and track_all.json: refused before the model loads
    assert main(["track-all", str(stack), str(out), "--formats", "csv,labels", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"OUTDIR: {out / 'tracks.csv'} exists; pass --overwrite to replace it" in err
    assert len(standin) == 1
    rc = main(["track-all", str(stack), str(out), "--formats", "csv,labels", "--overwrite", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.tif",
        "notes.txt",
        "track_all.json",
        "tracks.csv",
    ]
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_keeps_the_users_files_in_ctc(stack, tmp_path, standin, capsys):
    out = tmp_path / "out"
    args = ["track-all", str(stack), str(out), "--formats", "ctc", "--keep-border", "--quiet"]
    assert main(args) == 0
    (out / "ctc" / "my_notes.txt").write_text("mine")
    (out / "ctc" / "res_track.txt").write_text("stale")
    assert main(args) == 2
    assert "ctc already holds mask000.tif (an earlier output); pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert (out / "ctc" / "my_notes.txt").read_text() == "mine"
    assert (out / "ctc" / "res_track.txt").read_text() != "stale"
    assert sorted(p.name for p in (out / "ctc").iterdir() if not p.name.startswith("mask")) == [
        "my_notes.txt",
        "res_track.txt",
    ]


def test_outdir_that_cannot_be_written_fails_before_the_model_loads(
    stack, tmp_path, standin, capsys, monkeypatch
):
    import os

    (tmp_path / "file").write_text("x")
    assert main(["track-all", str(stack), str(tmp_path / "file" / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"OUTDIR: cannot write {tmp_path / 'file' / 'out'}" in err and "is a file, not a folder" in err
    assert "Errno" not in err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anyway: pretend the folder is read-only for this user
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and str(p) != str(ro))
        assert main(["track-all", str(stack), str(ro / "out"), "--quiet"]) == 2
    finally:
        ro.chmod(0o755)
    assert (
        f"the folder {ro} is read-only for you; choose a folder you can write to" in capsys.readouterr().err
    )
    assert not standin and not (ro / "out").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--every", "-1"], "--every must be >= 0"),
        (["--lost-after", "0"], "--lost-after must be >= 1"),
        (["--min-area", "0"], "--min-area must be >= 1"),
        (["--min-area", "50", "--max-area", "10"], "--max-area must be >= --min-area"),
        (["--match-iou", "1.5"], "--match-iou must be in"),
        (["--division-frames", "0"], "--division-frames must be >= 1"),
        (["--start-frame", "30"], "must lie in 0 .. 23"),
        (["--start-frame", "5", "--end-frame", "4"], "--end-frame must be >= --start-frame"),
        (["--formats", "ctc,xml"], "unknown format"),
        (["--model", "sam3"], "--model 'sam3' is not a known model"),
        (["--checkpoint", "/nonexistent/x.pt"], "no such file"),
        (["--device", "tpu"], "--device 'tpu'"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(stack, tmp_path, standin, capsys, extra, message):
    rc = main(["track-all", str(stack), str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.startswith("napari-sam2 track-all: ")
    assert not standin and not (tmp_path / "out").exists()


def test_missing_stack_and_outdir_that_is_a_file(tmp_path, standin, capsys):
    assert main(["track-all", str(tmp_path / "nope.tif"), str(tmp_path / "out")]) == 2
    assert "STACK: no such file" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["track-all", str(tmp_path / "file"), str(tmp_path / "file")]) == 2
    assert "is a file, not a folder; choose a folder" in capsys.readouterr().err


def test_without_segment_everything_it_says_so_before_loading_weights(stack, tmp_path, monkeypatch, capsys):
    import napari_sam2.engine.predict.video_predictor as vp

    monkeypatch.setitem(sys.modules, "napari_sam2.engine.segment.automatic_mask_generator", None)
    monkeypatch.setattr(vp, "build_sam2_video_predictor", lambda *a, **k: pytest.fail("weights were loaded"))
    rc = main(["track-all", str(stack), str(tmp_path / "out"), "--quiet"])
    assert rc == 2 and "SAM2AutomaticMaskGenerator" in capsys.readouterr().err


def test_a_failing_run_still_writes_the_frames_tracked(stack, tmp_path, monkeypatch, movie, capsys):
    image, labels, _ = movie

    class Failing(GroundTruthPredictor):
        def propagate_in_video(self, *args, **kwargs):
            for item in super().propagate_in_video(*args, **kwargs):
                if item[0] == 6:
                    raise RuntimeError("out of memory (pretend)")
                yield item

    monkeypatch.setattr(
        cli, "build_engine", lambda args: (Failing(labels), GroundTruthMaskGenerator(image, labels))
    )
    out = tmp_path / "out"
    rc = main(["track-all", str(stack), str(out), "--every", "0", "--quiet", "--formats", "labels"])
    err = capsys.readouterr().err
    assert (
        rc == 1
        and "failed: RuntimeError: out of memory (pretend); frames 0..5 were tracked and written" in err
    )
    info = json.loads((out / "track_all.json").read_text())
    assert info["frames_tracked"] == [0, 5] and info["stopped"].startswith("failed")
    written = tifffile.imread(out / "labels.tif")
    assert written[5].max() > 0 and written[6:].max() == 0


def test_border_cells_are_kept_by_default_and_keep_border_is_a_noted_no_op(stack, tmp_path, standin, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "track-all",
                str(stack),
                str(out),
                "--every",
                "0",
                "--keep-border",
                "--quiet",
                "--formats",
                "csv",
            ]
        )
        == 0
    )
    assert "--keep-border is the default now and does nothing" in capsys.readouterr().err
    assert (
        json.loads((out / "track_all.json").read_text())["config"]["seed_filter"]["drop_border_touching"]
        is False
    )
    out = tmp_path / "dropped"
    assert (
        main(
            [
                "track-all",
                str(stack),
                str(out),
                "--every",
                "0",
                "--drop-border",
                "--quiet",
                "--formats",
                "csv",
            ]
        )
        == 0
    )
    assert (
        json.loads((out / "track_all.json").read_text())["config"]["seed_filter"]["drop_border_touching"]
        is True
    )


def test_seeding_that_keeps_nothing_stops_before_tracking(stack, tmp_path, monkeypatch, movie, capsys):
    image, labels, _ = movie
    predictor = GroundTruthPredictor(labels)
    monkeypatch.setattr(
        cli, "build_engine", lambda args: (predictor, GroundTruthMaskGenerator(image, labels))
    )
    out = tmp_path / "out"
    rc = main(["track-all", str(stack), str(out), "--min-area", "100000", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "seeding kept no object on frame 0" in err and "lower min_area (--min-area)" in err
    import re

    produced = re.search(r"produced (\d+) mask\(s\)", err)
    assert produced and int(produced[1]) > 0 and f"min area {produced[1]}," in err  # all by --min-area
    assert not any(c[0] == "propagate" for c in predictor.calls)  # no frame was tracked
    assert not out.exists() or not any(out.iterdir())  # no outputs that cannot be opened


def test_progress_says_frames_done_of_total_and_cells(stack, tmp_path, standin, capsys):
    rc = main(["track-all", str(stack), str(tmp_path / "out"), "--every", "0", "--formats", "csv"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "24/24" in err and "cells=" in err and "tracks=" in err


def test_help_lists_the_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "track-all" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- instance head


def _head_file(path, info):
    from napari_sam2.engine.segment.instance_head import InstanceHead

    return InstanceHead(width=16).save(path, info)


def test_instance_head_takes_its_variant_and_checkpoint_and_replaces_segment_everything(
    stack, tmp_path, monkeypatch, small_model
):
    """--instance-head: the head's variant and checkpoint are used unless given, and the
    cells are found by the head on the predictor's own model (no point-grid generator)."""
    import napari_sam2.engine.predict.video_predictor as vp
    from napari_sam2.engine.segment.instance_head import InstanceHeadGenerator

    ckpt = tmp_path / "tuned.pt"
    ckpt.write_bytes(b"x")
    head = _head_file(
        tmp_path / "tuned.instance-head.pt", {"model": "sam2.1_hiera_t", "checkpoint": str(ckpt)}
    )
    asked = []

    def build(config, checkpoint, **kwargs):
        asked.append((config, checkpoint))
        return vp.SAM2VideoPredictor(small_model)

    monkeypatch.setattr(vp, "build_sam2_video_predictor", build)
    monkeypatch.setitem(sys.modules, "napari_sam2.engine.segment.automatic_mask_generator", None)
    args = cli_args(stack, tmp_path, "--instance-head", str(head))
    cli.validate(args)[2].close()
    predictor, generator = cli.build_engine(args)
    assert asked == [("sam2.1_hiera_t", str(ckpt))]
    assert isinstance(generator, InstanceHeadGenerator) and generator.model is predictor.model


def cli_args(stack, tmp_path, *extra):
    import argparse

    from napari_sam2.cli import track_all

    parser = argparse.ArgumentParser()
    track_all.add_parser(parser.add_subparsers())
    return parser.parse_args(["track-all", str(stack), str(tmp_path / "out"), *extra])


@pytest.mark.parametrize(
    ("info", "extra", "message"),
    [
        ({"model": "sam2.1_hiera_s"}, ["--model", "sam2.1_hiera_t"], "reads the features of sam2.1_hiera_s"),
        ({"model": "sam2.1_hiera_t", "checkpoint": "/gone/tuned.pt"}, [], "not there any more"),
        (None, [], "does not exist"),
    ],
)
def test_instance_head_problems_are_refused_before_the_model_loads(
    stack, tmp_path, monkeypatch, capsys, info, extra, message
):
    import napari_sam2.engine.predict.video_predictor as vp

    monkeypatch.setattr(vp, "build_sam2_video_predictor", lambda *a, **k: pytest.fail("weights were loaded"))
    head = tmp_path / "h.pt" if info is None else _head_file(tmp_path / "h.pt", info)
    rc = main(["track-all", str(stack), str(tmp_path / "out"), "--instance-head", str(head), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "--instance-head" in err
