"""``napari-sam2 train``: from an image TIFF and its label TIFF to a checkpoint, delta and model
card; bad arguments fail in one line before training; an existing output is never replaced."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import tifffile

from napari_sam2.cli import main, train
from napari_sam2.plugin.sample_data import synthetic_timelapse

sys.path.insert(0, str(Path(__file__).parent / "engine" / "train"))
from train_support import reduced_model  # noqa: E402


@pytest.fixture
def data(tmp_path):
    img, lab = synthetic_timelapse(4, (256, 256), 3, seed=0)
    img, lab = img[:, 36:108, 36:108], lab[:, 36:108, 36:108]
    ip, lp = tmp_path / "cells.tif", tmp_path / "cells_labels.tif"
    tifffile.imwrite(ip, img, photometric="minisblack")
    tifffile.imwrite(lp, lab, photometric="minisblack")
    return ip, lp


@pytest.fixture
def small(tiny_checkpoint, monkeypatch):
    """The CLI trains the reduced-size tiny model with the test weights."""
    monkeypatch.setattr(train, "_model", lambda args: reduced_model(tiny_checkpoint))
    return tiny_checkpoint


def _args(data, out, ckpt, *extra):
    ip, lp = data
    return [
        "train", "--data", str(ip), str(lp), "-o", str(out), "--checkpoint", str(ckpt), "--device", "cpu",
        "--steps", "2", "--loss-resolution", "low", "--correction-clicks", "1", "--objects-per-step", "1",
        "--split", "time", "--block", "1", "--val-fraction", "0.3", "--validate-every", "2", *extra,
    ]  # fmt: skip


def test_train_writes_checkpoint_delta_and_card(data, small, tmp_path, capsys):
    out = tmp_path / "tuned.pt"
    assert main(_args(data, out, small, "--instance-head-steps", "3")) == 0
    printed = capsys.readouterr()
    assert "2 steps" in printed.out and "tuned.pt" in printed.out and "tuned.instance-head.pt" in printed.out
    from napari_sam2.engine.train.instance_head import InstanceHead

    _, info = InstanceHead.load(tmp_path / "tuned.instance-head.pt")
    assert info["steps"] == 3 and "val_f1" in info
    assert "step 2/2" in printed.err and "instance head step 3/3" in printed.err
    assert f"--instance-head {tmp_path / 'tuned.instance-head.pt'}" in printed.out  # how to use it
    assert info["checkpoint"] == str(out) and info["model"] == "sam2.1_hiera_t"  # what track-all takes
    card = json.loads((tmp_path / "tuned.card.json").read_text())
    assert card["steps"] == 2 and card["data"]["split"] == "time" and card["val_iou_before"] is not None
    assert (tmp_path / "tuned.delta.pt").exists() and (tmp_path / "tuned.card.md").exists()
    from napari_sam2.engine.weights.build import build_sam2

    build_sam2("sam2.1_hiera_t", out)  # strict
    # a second run refuses to replace the files, before training
    assert main(_args(data, out, small)) == 2
    assert "already exist" in capsys.readouterr().err


def test_bad_arguments_fail_in_one_line(data, small, tmp_path, capsys):
    ip, lp = data
    args = _args((ip, tmp_path / "nope.tif"), tmp_path / "x.pt", small)
    assert main(args) == 2
    assert "nope.tif do not exist" in capsys.readouterr().err
    fp = tmp_path / "float.tif"
    tifffile.imwrite(fp, tifffile.imread(ip).astype("float32"), photometric="minisblack")
    assert main(_args((ip, fp), tmp_path / "x.pt", small)) == 2  # an image given as the labels
    assert "labels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_args(data, tmp_path / "x.pt", small, "--trainable", "everything"))
    assert main(_args(data, tmp_path / "x.pt", small, "--resume")) == 2
    assert "no saved state" in capsys.readouterr().err


def test_the_commands_choices_are_the_engines():
    """The parser names the choices itself (``napari-sam2 --help`` loads no torch); they must
    stay the engine's."""
    import argparse

    from napari_sam2.cli import train as cli
    from napari_sam2.engine.train.data import SPLITS
    from napari_sam2.engine.train.trainer import TRAINABLE

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    train = parser._subparsers._group_actions[0].choices["train"]
    choices = {a.dest: tuple(a.choices) for a in train._actions if a.choices}
    assert choices["trainable"] == TRAINABLE and choices["split"] == SPLITS
