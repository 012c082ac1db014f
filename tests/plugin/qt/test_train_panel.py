"""The widget's Train tab: the controls are the Train settings, Start asks before replacing
anything (files; a stopped run: resume or afresh), and a real (small) training runs in a
worker thread while the GUI goes on, drawing its curves, then the new model is in use.

Run under a virtual X server: ``xvfb-run -a python3 -m pytest tests/plugin/qt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("pytestqt")

from qtpy.QtCore import QTimer  # noqa: E402
from qtpy.QtWidgets import QMessageBox  # noqa: E402

from napari_sam2.plugin import training  # noqa: E402
from napari_sam2.plugin._qt import train_panel  # noqa: E402
from napari_sam2.plugin._qt.widget import SAM2Widget  # noqa: E402
from napari_sam2.plugin.sample_data import synthetic_timelapse  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[2] / "engine" / "train"))
from train_support import reduced_model  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def train_widget(make_napari_viewer, tiny_checkpoint, monkeypatch):
    """Cells and their corrected labels in a viewer, the widget on the Train tab; training
    builds the reduced tiny model with the test weights."""
    monkeypatch.setattr(training, "_model", lambda spec: reduced_model(spec.checkpoint))
    img, lab = synthetic_timelapse(4, (256, 256), 3, seed=0)
    viewer = make_napari_viewer()
    viewer.add_image(img[:, 36:108, 36:108], name="cells")
    viewer.add_labels(lab[:, 36:108, 36:108].astype(np.int32), name="corrected")
    w = SAM2Widget(viewer, synchronous=True)
    viewer.window.add_dock_widget(w)
    w.set_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, device="cpu")
    w.tabs.setCurrentIndex(w.tabs.count() - 1)
    assert w.tabs.tabText(w.tabs.currentIndex()) == "Train"
    return viewer, w


def test_controls_are_the_train_settings(train_widget):
    _, w = train_widget
    p, t = w.train_panel, w.annotator.training
    assert p.image_combo.currentText() == "cells" and p.labels_combo.currentText() == "corrected"
    p.add_btn.click()
    assert t.settings.pairs == (("cells", "corrected"),) and p.pairs_list.count() == 1
    p.steps_spin.setValue(50)
    p.head_spin.setValue(300)
    p.trainable_combo.setCurrentIndex(p.trainable_combo.findData("lora"))
    p.val_spin.setValue(30)
    p.use_now_check.setChecked(False)
    s = t.settings
    assert (s.steps, s.instance_head_steps, s.trainable, s.val_fraction, s.use_now) == (
        50,
        300,
        "lora",
        0.3,
        False,
    )
    t.set_training(split="time", block=2, output="/tmp/x.pt")
    assert p.split_combo.currentText() == "time" and p.block_spin.value() == 2
    assert p.output_edit.text() == "/tmp/x.pt" and p.head_spin.specialValueText() == "none"
    p.pairs_list.setCurrentRow(0)
    p.remove_btn.click()
    assert t.settings.pairs == () and not p.cancel_btn.isEnabled()


def test_start_asks_before_replacing_files_or_a_stopped_run(train_widget, tmp_path, monkeypatch):
    _, w = train_widget
    p, t = w.train_panel, w.annotator.training
    calls, asked, answers = [], [], {}
    monkeypatch.setattr(t, "train", lambda **kw: calls.append(kw))
    monkeypatch.setattr(
        QMessageBox, "question", lambda parent, title, text, *a: asked.append(text) or answers["files"]
    )
    monkeypatch.setattr(
        train_panel, "ask_resume", lambda parent, text: asked.append(text) or answers["state"]
    )
    p.output_edit.setText(str(tmp_path / "tuned.pt"))
    p.start_btn.click()  # nothing exists: no question; the picked pair is used
    assert calls == [dict(resume=False, overwrite=False)] and not asked
    assert t.settings.pairs == (("cells", "corrected"),) and t.settings.output == str(tmp_path / "tuned.pt")
    (tmp_path / "tuned.pt").write_bytes(b"mine")
    answers["files"] = QMessageBox.StandardButton.No
    p.start_btn.click()
    assert len(calls) == 1 and "tuned.pt already exist. Replace them?" in asked[-1]
    assert "Nothing was trained; tuned.pt are kept" in w.status_label.text()
    answers["files"] = QMessageBox.StandardButton.Yes
    p.start_btn.click()
    assert calls[-1] == dict(resume=False, overwrite=True)
    (tmp_path / "tuned.pt").unlink()
    state = tmp_path / "tuned.train-state" / "train_state.pt"
    state.parent.mkdir()
    state.write_bytes(b"x")
    for answer, want in (
        ("resume", dict(resume=True, overwrite=False)),
        ("afresh", dict(resume=False, overwrite=True)),
    ):
        answers["state"] = answer
        p.start_btn.click()
        assert "saved its state" in asked[-1] and calls[-1] == want
    answers["state"] = None  # Cancel
    p.start_btn.click()
    assert len(calls) == 4 and state.exists()


def test_training_runs_beside_the_gui_draws_curves_and_is_used_at_once(train_widget, tmp_path, qtbot):
    viewer, w = train_widget
    p, ann = w.train_panel, w.annotator
    w.synchronous = False  # as in napari: a worker thread
    ann.training.set_training(
        steps=4, split="time", block=1, val_fraction=0.3, validate_every=2, instance_head_steps=2
    )
    p.output_edit.setText(str(tmp_path / "tuned.pt"))
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(ann.busy))
    timer.start(20)
    drawn = []
    ann.events.training.connect(lambda e: drawn.append(len(p.plot.curves.loss)))
    with qtbot.waitSignal(w.job_finished, timeout=120_000) as finished:
        p.start_btn.click()
        assert ann.busy == "train" and p.cancel_btn.isEnabled() and not p.start_btn.isEnabled()
    timer.stop()
    assert finished.args == ["train", "done"], ann.status.text
    assert ticks.count("train") >= 10  # the GUI's event loop ran on while it trained
    assert drawn[:4] == [1, 2, 3, 4]  # the plot had each step when it was announced
    assert [s for s, _ in p.plot.curves.val_iou] == [0, 2, 4]
    assert (
        p.progress_label.text().startswith("Step 4 / 4: loss ")
        and "validation IoU" in p.progress_label.text()
    )
    assert "instance head step 2" in p.progress_label.text()
    assert ann.settings.model.checkpoint == str(tmp_path / "tuned.pt")
    assert ann.settings.cells.instance_head == str(tmp_path / "tuned.instance-head.pt")
    assert "Now in use" in w.status_label.text() and p.start_btn.isEnabled()
    assert str(tmp_path / "tuned.pt") in w.model_panel.checkpoint_label.text()
