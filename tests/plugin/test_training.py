"""The annotator's Train part without Qt (a ``ViewerModel``, jobs synchronous): Image + Labels
layer pairs -> a fine-tuned checkpoint and instance head, used at once; bad input refused
before anything runs; cancel keeps a resumable state; nothing existing is replaced unasked.

The training is real: the tiny variant with the golden test weights at a reduced input size
(tests/engine/train/train_support.py), a few steps on a synthetic time-lapse crop."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_sam2.engine.track.session import SessionError
from napari_sam2.plugin import training
from napari_sam2.plugin.annotator import Annotator
from napari_sam2.plugin.sample_data import synthetic_timelapse

sys.path.insert(0, str(Path(__file__).parents[1] / "engine" / "train"))
from train_support import reduced_model  # noqa: E402

# small and quick: a few steps, validation on one held-out frame of four
QUICK = dict(steps=2, split="time", block=1, val_fraction=0.3, validate_every=2, instance_head_steps=2)


@pytest.fixture(scope="module")
def crop():
    img, lab = synthetic_timelapse(4, (256, 256), 3, seed=0)
    return img[:, 36:108, 36:108], lab[:, 36:108, 36:108]


@pytest.fixture
def ann(crop, tiny_checkpoint, monkeypatch):
    """Cells and their corrected labels in a viewer; training builds the reduced tiny model."""
    monkeypatch.setattr(training, "_model", lambda spec: reduced_model(spec.checkpoint))
    viewer = ViewerModel()
    viewer.add_image(crop[0], name="cells")
    viewer.add_labels(crop[1].astype(np.int32), name="corrected")
    a = Annotator(viewer, synchronous=True)
    a.set_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, device="cpu")
    a.steps = []
    a.events.training.connect(a.steps.append)
    a.errors = []
    a.events.error.connect(a.errors.append)
    return a


def _refused(ann, match: str, **kw) -> None:
    assert ann.training.train(**kw) is False
    assert ann.status.outcome == "failed" and ann.busy is None
    assert match in ann.last_error, ann.last_error
    assert ann.errors[-1] == ann.last_error  # a notification in the widget


def test_bad_input_is_refused_before_anything_runs(ann, crop, tmp_path):
    t = ann.training
    _refused(ann, "choose an image layer and the Labels layer")
    t.add_pair("cells", "cells")
    _refused(ann, "'cells' is not a Labels layer; choose a Labels layer")
    ann.viewer.add_labels(np.zeros((4, 72, 60), np.int32), name="other shape")
    t.set_training(pairs=[("cells", "other shape")])
    _refused(ann, "have shape (4, 72, 60) but the image 'cells' is (4, 72, 72)")
    ann.viewer.add_labels(np.zeros((4, 72, 72), np.int32), name="empty")
    t.set_training(pairs=[("cells", "empty")])
    _refused(ann, "'empty' is empty: draw or correct some cells first")
    t.set_training(pairs=[(ann.viewer.layers["cells"], ann.viewer.layers["corrected"])])  # layers or names
    _refused(ann, "choose where to save the trained model")
    t.set_training(output=tmp_path / "tuned.pt", instance_head_steps=2)
    (tmp_path / "tuned.card.md").write_text("mine")
    (tmp_path / "tuned.instance-head.pt").write_text("mine too")
    assert t.output_files() == [tmp_path / "tuned.card.md", tmp_path / "tuned.instance-head.pt"]
    _refused(ann, "tuned.card.md, ")
    assert "instance-head.pt already exist: choose another output, or replace them" in ann.last_error
    assert (tmp_path / "tuned.card.md").read_text() == "mine"
    _refused(ann, "no stopped run of tuned.pt to resume", resume=True, overwrite=True)
    state = tmp_path / "fresh.train-state" / "train_state.pt"
    state.parent.mkdir()
    state.write_bytes(b"x")
    t.set_training(output=str(tmp_path / "fresh.pt"))
    assert t.saved_state() == state
    _refused(ann, "a stopped run of fresh.pt saved its state")
    assert state.exists() and not (tmp_path / "fresh.pt").exists()
    # a missing official checkpoint is not downloaded silently by the training thread
    from napari_sam2.engine.weights import checkpoints

    missing = checkpoints.CheckpointStatus(
        "sam2.1_hiera_t", tmp_path / "x.pt", "missing", "Not downloaded yet."
    )
    with pytest.MonkeyPatch.context() as m:
        m.setattr(checkpoints, "checkpoint_status", lambda *a: missing)
        t.set_training(output=str(tmp_path / "new.pt"))
        _refused(ann, "Not downloaded yet. Click 'Download' in the Model box")


def test_settings_are_checked(ann):
    t = ann.training
    for bad, match in (
        (dict(steps=0), "steps must be 1 or more"),
        (dict(trainable="all"), "choose one of decoder, lora, memory"),
        (dict(split="random"), "choose one of auto, stack, time"),
        (dict(val_fraction=1.0), "val_fraction"),
        (dict(instance_head_steps=-1), "instance_head_steps"),
        (dict(epochs=3), "unknown training setting"),
    ):
        with pytest.raises(SessionError, match=match):
            t.set_training(**bad)
    t.add_pair("cells", "corrected")
    t.add_pair("cells", "corrected")  # once
    assert t.settings.pairs == (("cells", "corrected"),)
    t.remove_pair(0)
    assert t.settings.pairs == ()


def test_train_uses_the_new_model_at_once_and_cancel_resumes(ann, tmp_path, tiny_checkpoint):
    t = ann.training
    t.set_training(pairs=[("cells", "corrected")], output=str(tmp_path / "tuned.pt"), **QUICK)
    refused = []
    # while it trains, the annotator's other jobs are refused as busy
    ann.events.training.connect(lambda e: refused.append(ann.preview()) if len(refused) == 0 else None)
    assert t.train() is True
    assert ann.status.outcome == "done" and not ann.last_error, ann.status.text
    assert refused == [None] and "busy (train)" in ann.errors[0]
    ann.errors.clear()
    for name in ("tuned.pt", "tuned.delta.pt", "tuned.card.json", "tuned.card.md", "tuned.instance-head.pt"):
        assert (tmp_path / name).is_file(), name
    # used at once: the model is the new checkpoint, All cells segments with the new head
    assert ann.settings.model.checkpoint == str(tmp_path / "tuned.pt")
    assert ann.settings.cells.instance_head == str(tmp_path / "tuned.instance-head.pt")
    assert "validation IoU" in ann.status.text and "Now in use" in ann.status.text
    # progress: every step with its loss, validation at the end, then the head's steps
    phases = [(e.phase, e.step) for e in ann.steps]
    assert phases == [("model", 1), ("model", 2), ("instance head", 1), ("instance head", 2)]
    assert all(np.isfinite(e.loss) for e in ann.steps) and ann.steps[1].val_iou is not None
    curves = t.curves
    assert [s for s, _ in curves.loss] == [1, 2] and [s for s, _ in curves.val_iou] == [0, 2]
    assert len(curves.head_loss) == 2 and t.result["files"]["checkpoint"] == tmp_path / "tuned.pt"

    # cancel at the first step: the step in progress ends, the state is saved, nothing else is
    # written and the model in use is unchanged
    ann.steps.clear()
    t.set_training(output=str(tmp_path / "again.pt"), steps=4, instance_head_steps=0)
    stop = ann.events.training.connect(lambda e: ann.cancel())
    assert t.train() is True
    ann.events.training.disconnect(stop)
    done = ann.steps[-1].step
    assert ann.status.outcome == "cancelled" and done in (1, 2)  # the step under way when cancelled ends
    assert (tmp_path / "again.train-state" / "train_state.pt").is_file()
    assert not (tmp_path / "again.pt").exists() and ann.settings.model.checkpoint == str(
        tmp_path / "tuned.pt"
    )
    assert f"Training stopped after {done} step" in ann.status.text and "Resume" in ann.status.text
    _refused(ann, "a stopped run of again.pt saved its state")
    # resume: continues after the last step done, its curves start with the steps done before
    ann.steps.clear()
    t.set_training(use_now=False)
    assert t.train(resume=True) is True and ann.status.outcome == "done", ann.status.text
    assert [e.step for e in ann.steps] == list(range(done + 1, 5))
    assert [s for s, _ in t.curves.loss] == [1, 2, 3, 4] and t.curves.val_iou[0][0] == 0
    assert (tmp_path / "again.pt").is_file() and ann.settings.model.checkpoint == str(tmp_path / "tuned.pt")
    assert "Load it in the Model box" in ann.status.text
