"""The dock as a user meets it (#19): it never widens past its size, starts without a Qt or
Python warning, asks before replacing the user's seeds or exported tracks, shows and clears
the embedding cache, and keeps its spin boxes' texts whole.

Run under a virtual X server: ``xvfb-run -a python3 -m pytest tests/plugin/qt``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("pytestqt")

from fakes import GroundTruthMaskGenerator, GroundTruthPredictor  # noqa: E402
from qtpy.QtCore import qInstallMessageHandler  # noqa: E402
from qtpy.QtWidgets import QDoubleSpinBox, QMessageBox, QSpinBox  # noqa: E402

from napari_sam2.plugin._qt.widget import SAM2Widget  # noqa: E402
from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def cells_widget(make_napari_viewer):
    image, labels, _ = synthetic_lineage_timelapse(n_frames=20, seed=0)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    viewer.dims.set_current_step(0, 0)  # the seeding frame
    w = SAM2Widget(viewer, synchronous=True)
    viewer.window.add_dock_widget(w)
    w.annotator.use_predictor(GroundTruthPredictor(labels))
    w.annotator.cells.use_mask_generator(GroundTruthMaskGenerator(image, labels))
    return viewer, w


def _answer(monkeypatch, yes: bool) -> list[str]:
    asked = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(text)
        return QMessageBox.StandardButton.Yes if yes else QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


def test_starting_the_widget_prints_no_qt_or_python_warning(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.uint16), name="cells")
    qt_messages: list[str] = []
    previous = qInstallMessageHandler(lambda mode, ctx, msg: qt_messages.append(msg))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            w = SAM2Widget(viewer, synchronous=True)
            viewer.window.add_dock_widget(w)
            w.annotator.status.say("started")  # the status signal reaches the label
            qtbot.wait(50)
    finally:
        qInstallMessageHandler(previous)
    ours = [str(x.message) for x in caught if "napari_sam2" in x.filename or "psygnal" in x.filename]
    assert qt_messages == [] and ours == []
    assert w.status_label.text() == "started"


def test_a_long_status_line_does_not_widen_the_dock(cells_widget, qtbot):
    _, w = cells_widget
    before = (w.sizeHint().width(), w.minimumSizeHint().width())
    text = "x" * 300 + " /a/very/long/folder/name/that/does/not/break" * 5
    w.annotator.status.say(text[:500])
    qtbot.wait(10)
    assert (w.sizeHint().width(), w.minimumSizeHint().width()) <= before
    assert w.minimumSizeHint().width() == before[1] and w.sizeHint().width() == before[0]
    assert w.status_label.toolTip() == text[:500] and w.status_label.text() == text[:500]


def test_spin_boxes_show_their_whole_special_text(cells_widget):
    _, w = cells_widget
    for spin in w.findChildren((QSpinBox, QDoubleSpinBox)):
        special = spin.specialValueText()
        if special:
            assert spin.minimumWidth() >= spin.fontMetrics().horizontalAdvance(special), special


def test_segment_everything_again_asks_before_replacing_edited_seeds(cells_widget, monkeypatch):
    _, w = cells_widget
    cp, ann = w.cells_panel, w.annotator
    cp.segment_btn.click()
    seeds = ann.cells.seeds_layer()
    first = np.array(seeds.data[0])
    assert first.max() >= 2 and "objects on frame 0" in ann.status.text
    # no edit: a re-run asks nothing
    asked = _answer(monkeypatch, yes=False)
    cp.segment_btn.click()
    assert asked == []
    # the user deletes a seed: the next run asks, "No" keeps the edit
    seeds.data[0][seeds.data[0] == 1] = 0
    edited = np.array(seeds.data[0])
    cp.segment_btn.click()
    assert len(asked) == 1 and "edited the seeds on frame 0" in asked[0]
    np.testing.assert_array_equal(seeds.data[0], edited)
    assert "are kept" in ann.status.text
    # "Yes" replaces them, as one undo step
    asked = _answer(monkeypatch, yes=True)
    cp.segment_btn.click()
    assert len(asked) == 1
    np.testing.assert_array_equal(seeds.data[0], first)
    seeds.undo()
    np.testing.assert_array_equal(seeds.data[0], edited)


def test_export_asks_before_replacing_and_never_says_overwrite_true(cells_widget, monkeypatch, tmp_path):
    from qtpy.QtWidgets import QFileDialog

    _, w = cells_widget
    ann, cp = w.annotator, w.cells_panel
    ann.set_cells(reseed_every=0)
    ann.segment_everything(frame=0)
    ann.track_all_cells(frame=0)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path))
    errors = []
    monkeypatch.setattr("napari_sam2.plugin._qt.cells_panel.notify_error", errors.append)
    asked = _answer(monkeypatch, yes=False)
    cp.export_btn.click()
    assert asked == [] and (tmp_path / "tracks.csv").is_file()
    (tmp_path / "tracks.csv").write_text("mine")
    cp.export_btn.click()  # "No": nothing is replaced
    assert len(asked) == 1 and "already exist" in asked[0] and (tmp_path / "tracks.csv").read_text() == "mine"
    asked = _answer(monkeypatch, yes=True)
    cp.export_btn.click()  # "Yes": replaced
    assert len(asked) == 1 and (tmp_path / "tracks.csv").read_text() != "mine"
    assert not any("overwrite=True" in e for e in errors) and errors == []


def test_the_cache_row_shows_folder_and_size_and_clears_after_asking(
    make_napari_viewer, monkeypatch, tmp_path
):
    from napari_sam2.engine.cache.embedding_cache import EmbeddingCache

    folder = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_SAM2_EMBEDDING_DIR", str(folder))
    EmbeddingCache(folder).ensure_folder()  # the cache's own folder, as a session makes it
    entry = folder / "v1" / "model" / ("ab" * 32 + ".zarr.zip")  # a name the cache writes
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"0" * 3 * 2**20)
    mine = folder / "notes.txt"
    mine.write_text("not the cache's")
    viewer = make_napari_viewer()
    w = SAM2Widget(viewer, synchronous=True)
    mp = w.model_panel
    assert mp.cache_label.text().startswith("3.0 MiB of 20.0 GiB") and mp.cache_label.text().endswith(
        f" in {folder}"
    )
    assert mp.cache_clear_btn.isEnabled()
    asked = _answer(monkeypatch, yes=False)
    mp.cache_clear_btn.click()
    assert len(asked) == 1 and entry.exists()
    asked = _answer(monkeypatch, yes=True)
    mp.cache_clear_btn.click()
    assert not entry.exists() and mine.read_text() == "not the cache's"
    assert mp.cache_label.text().startswith("0 B of") and not mp.cache_clear_btn.isEnabled()
    assert "1 entry removed" in w.annotator.status.text
    # a folder of the user's that the cache did not make: not used, and the row says why
    other = tmp_path / "data"
    other.mkdir()
    (other / "image.tif").write_bytes(b"x")
    monkeypatch.setenv("NAPARI_SAM2_EMBEDDING_DIR", str(other))
    mp.show_cache()
    assert mp.cache_label.text().startswith("not used: ") and "image.tif" in mp.cache_label.text()
    assert not mp.cache_clear_btn.isEnabled() and (other / "image.tif").exists()


def test_border_cells_are_kept_by_default(cells_widget):
    _, w = cells_widget
    assert not w.annotator.settings.cells.seeds.drop_border_touching
    assert not w.cells_panel.border_check.isChecked()


@pytest.mark.parametrize("kind", ["segment", "track-all"])
def test_deleting_the_image_during_a_threaded_cell_run_says_so_plainly(cells_widget, qtbot, kind):
    import threading

    viewer, w = cells_widget
    ann = w.annotator
    ann.set_cells(reseed_every=0)
    if kind == "track-all":
        ann.segment_everything(frame=0)
    gate = threading.Event()
    inner = ann.cells._generator_given
    if kind == "segment":  # the generator waits until the image is gone

        def slow(frame):
            gate.wait(5)
            return inner(frame)

        ann.cells.use_mask_generator(slow)
    else:  # the tracking waits after its first frames until the image is gone
        predictor = ann.model.session.predictor
        propagate = predictor.propagate_in_video
        started = threading.Event()

        def slow(*args, **kwargs):
            for i, out in enumerate(propagate(*args, **kwargs)):
                if i == 2:
                    started.set()
                    gate.wait(5)
                yield out

        predictor.propagate_in_video = slow
    w.synchronous = False
    ann.runs.runner.synchronous = False
    with qtbot.waitSignal(w.job_finished, timeout=20000) as sig:
        (ann.segment_everything if kind == "segment" else ann.track_all_cells)(frame=0)
        assert ann.busy == kind
        if kind == "track-all":
            qtbot.waitUntil(started.is_set, timeout=10000)
        viewer.layers.remove("cells")
        gate.set()
    assert sig.args == [kind, "cancelled"]
    text = w.status_label.text()
    assert f"Stopped: the image layer 'cells' was deleted during the {kind}" in text, text
    assert "NoneType" not in text and ann.status.error is None


def test_no_label_is_cut_and_nothing_scrolls_sideways(cells_widget, qtbot):
    from napari_sam2.plugin._qt._common import WrappingLabel

    _, w = cells_widget
    w.window().resize(1200, 800)
    w.window().show()  # laid out as on screen
    long_path = "/a/very/long/folder/name/that/keeps/going/and/going/embedding-cache"
    w.model_panel.cache_label.setText(f"1.4 GB in {long_path}")
    w.annotator.status.say(f"Tracks written to {long_path}: ctc, tracks.geff, tracks.csv")

    def laid_out_in_full():
        labels = [lab for lab in w.findChildren(WrappingLabel) if lab.isVisible() and lab.text()]
        assert len(labels) >= 3
        for label in labels:  # every wrapped line is shown
            assert label.height() >= label.heightForWidth(label.width()), label.text()
        scroll = w.tabs.currentWidget()
        assert scroll.horizontalScrollBar().maximum() == 0  # no sideways scrolling
        assert scroll.widget().width() >= scroll.widget().minimumSizeHint().width()

    for tab in range(w.tabs.count()):
        w.tabs.setCurrentIndex(tab)
        # the layout settles over a few event-loop turns (longer on a loaded machine): a cut label
        # that stays cut fails after 3 s
        qtbot.waitUntil(laid_out_in_full, timeout=3000)
