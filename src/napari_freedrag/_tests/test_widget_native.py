"""The dock widget as a native napari tool: explained, remembered, keyboard-driven.

The analytic backend (Gaussian blobs with known geometry, a few ms a step) stands in for a
model: these tests check what a user sees and presses, not picture quality.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from napari_freedrag._tests.test_napari_widget import notes  # noqa: F401 (fixture)
from napari_freedrag.models.analytic import AnalyticBackend
from napari_freedrag.napari import layers as L

pytestmark = pytest.mark.napari
napari = pytest.importorskip("napari")


def dock(viewer, backend=None):
    from napari_freedrag.napari.widget import FreeDragWidget

    w = FreeDragWidget(viewer, backend=backend or AnalyticBackend(size=64, n_blobs=2))
    viewer.window.add_dock_widget(w, name="FreeDrag")
    return w


def wait_idle(qtbot, w):
    qtbot.waitUntil(lambda: not w.controller.running, timeout=60_000)


@pytest.fixture
def ready(make_napari_viewer, qtbot):
    """A docked widget showing the analytic model's seed-0 image."""
    w = dock(make_napari_viewer())
    w.new_image()
    wait_idle(qtbot, w)
    assert len(w.controller.history) == 1 and w.controller.layers.working is not None
    return w


def place(w, handles, targets):
    w.controller.layers.set_points_from_image(L.HANDLES, handles)
    w.controller.layers.set_points_from_image(L.TARGETS, targets)


def blob(w, k: int = 0) -> np.ndarray:
    """The centre of blob ``k`` in the current edit, image pixels."""
    edit = w.controller.current_edit
    return np.round(edit.backend.centres(edit.state.latent)[k].numpy(), 1)


def step_shown(text: str) -> int:
    """The step a running status line shows (0 for any other status)."""
    running = re.match(r"running \w+: step (\d+) of", text)
    return int(running.group(1)) if running else 0


def towards_centre(point, distance: float) -> np.ndarray:
    """``point`` moved ``distance`` px towards the middle of the 64 px image."""
    direction = np.array([31.5, 31.5]) - point
    return np.round(point + distance * direction / np.linalg.norm(direction), 1)


def controls(container):
    """Every value or button widget inside ``container`` (nested containers included)."""
    from magicgui.widgets import Container, Label

    for child in container:
        if isinstance(child, Container):
            yield from controls(child)
        elif not isinstance(child, Label):
            yield child


def shown(w, control) -> bool:
    """Whether ``control`` shows when the dock does (the test window itself is hidden)."""
    return control.native.isVisibleTo(w.native)


def test_every_visible_control_explains_itself(make_napari_viewer, qtbot):
    w = dock(make_napari_viewer())
    w._collapsible.expand(animate=False)
    qtbot.wait(10)
    visible = [c for c in controls(w) if shown(w, c)]
    assert len(visible) >= 25
    missing = [c.label or c.text for c in visible if len(c.native.toolTip()) < 30]
    assert missing == []
    assert "Ctrl+Enter" in w.run_button.native.toolTip()
    assert "Ctrl+Z" in w.undo_button.native.toolTip()
    assert "Click on what should move" in w.guide.value
    # the algorithm's knobs sit in a section that starts closed
    w._collapsible.collapse(animate=False)
    assert not w._collapsible.isExpanded()
    assert all(w._collapsible.isAncestorOf(c.native) for c in (w.l, w.d, w.lr, w.mask_weight))
    assert shown(w, w.max_steps)


def test_a_diffusion_model_hides_what_it_cannot_use(make_napari_viewer, qtbot):
    from napari_freedrag.napari.controls import LDM_FOLDER

    w = dock(make_napari_viewer())
    w.backend = None
    w.model.value = LDM_FOLDER
    qtbot.wait(10)
    assert w.model_path.label == "model folder" and w.model_path.mode.value == "d"
    for name in ("seed", "truncation", "random_button"):
        assert not shown(w, getattr(w, name)), name
    assert shown(w, w.source) and shown(w, w.prompt)
    w.model.value = "cells"
    qtbot.wait(10)
    assert shown(w, w.seed) and shown(w, w.source) and not shown(w, w.prompt)


def test_long_messages_wrap_and_the_dock_keeps_its_width(ready, qtbot):
    ready.viewer.window._qt_window.show()
    dock_widget = ready.native.parentWidget()
    while dock_widget is not None and type(dock_widget).__name__ != "QtViewerDockWidget":
        dock_widget = dock_widget.parentWidget()
    qtbot.wait(50)
    width = dock_widget.width()
    ready.controller.status.emit("a very long message " * 40)
    qtbot.wait(50)
    assert dock_widget.width() == width
    assert ready.status.native.height() > 2 * ready.status.native.fontMetrics().height()


def test_settings_survive_close_and_reopen_and_method_switches(
    make_napari_viewer, qtbot, widget_settings_file
):
    viewer = make_napari_viewer()
    first = dock(viewer)
    first.new_image()
    wait_idle(qtbot, first)
    first.seed.value = 7
    first.lr.value = 0.05
    first.max_steps.value = 42
    first.method.value = "draggan"  # DragGAN shows its own preset ...
    assert first.lr.value != pytest.approx(0.05)
    first.lr.value = 0.02
    first.method.value = "freedrag"  # ... and FreeDrag's own values come back
    assert (first.lr.value, first.max_steps.value) == (pytest.approx(0.05), 42)
    assert json.loads(widget_settings_file.read_text())["fields"]["seed"] == 7
    viewer.window.remove_dock_widget(first.native)

    again = dock(viewer)
    assert (again.seed.value, again.method.value) == (7, "freedrag")
    assert (again.lr.value, again.max_steps.value) == (pytest.approx(0.05), 42)
    again.new_image()  # a new seed of the same model keeps the user's values
    wait_idle(qtbot, again)
    assert again.lr.value == pytest.approx(0.05)
    again.method.value = "draggan"
    assert again.lr.value == pytest.approx(0.02)

    again.restore_defaults()
    assert again.seed.value == 0 and again.method.value == "freedrag"
    preset = again.controller.history[0].backend.preset("freedrag", (64, 64))
    assert again.lr.value == pytest.approx(preset.lr)
    assert again.max_steps.value == preset.max_steps


def test_an_unreadable_settings_file_means_defaults(make_napari_viewer, widget_settings_file):
    widget_settings_file.parent.mkdir(parents=True)
    widget_settings_file.write_text("{not json")
    w = dock(make_napari_viewer())
    assert w.seed.value == 0
    w.seed.value = 3
    assert json.loads(widget_settings_file.read_text())["fields"]["seed"] == 3


def press(viewer, key, modifier=None):
    """A real key press on the canvas, as a user's keyboard sends it."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, key, modifier or Qt.KeyboardModifier.NoModifier)


def test_shortcuts_run_stop_undo_and_redo_through_real_key_presses(ready, qtbot):
    from qtpy.QtCore import Qt

    viewer, w = ready.viewer, ready
    ctrl, shift = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier
    handle = blob(w)
    place(w, [handle], [towards_centre(handle, 6)])
    w.max_steps.value = 30
    press(viewer, Qt.Key.Key_Return, ctrl)
    assert w.controller.running
    wait_idle(qtbot, w)
    assert len(w.controller.history) == 2

    w.max_steps.value = 5000
    w.preview_every.value = 1
    place(w, [handle], [towards_centre(handle, 20)])
    pressed = []

    def user_presses_escape(text):  # as soon as the run is visibly under way
        if step_shown(text) >= 2 and not pressed:
            pressed.append(text)
            press(viewer, Qt.Key.Key_Escape)

    w.controller.status.connect(user_presses_escape)
    press(viewer, Qt.Key.Key_Return, ctrl)
    assert w.controller.running
    wait_idle(qtbot, w)
    history = w.controller.history
    assert pressed and len(history) == 3 and history[2].entry["stopped"]

    press(viewer, Qt.Key.Key_Z, ctrl)
    assert history.current_index == 1
    press(viewer, Qt.Key.Key_Z, ctrl)
    press(viewer, Qt.Key.Key_Z, ctrl)  # at the start: nothing happens, nothing is deleted
    assert history.current_index == 0
    assert "nothing to undo" in w.status.value
    assert len(history) == 3
    press(viewer, Qt.Key.Key_Z, ctrl | shift)
    press(viewer, Qt.Key.Key_Z, ctrl | shift)
    assert history.current_index == 2
    np.testing.assert_array_equal(w.controller.layers.working.data, history[2].display())


def test_compare_methods_makes_two_labelled_edits_side_by_side(ready, qtbot):
    viewer, w = ready.viewer, ready
    handle = blob(w)
    place(w, [handle], [towards_centre(handle, 5)])
    w.max_steps.value = 40
    comparison = w.compare()
    qtbot.waitUntil(lambda: comparison.finished, timeout=60_000)
    edits = list(w.controller.history)[1:]
    assert [e.entry["method"] for e in edits] == [e.label for e in edits] == ["freedrag", "draggan"]
    assert [e.parent for e in edits] == [0, 0]
    assert edits[0].entry["instruction"]["handles"] == edits[1].entry["instruction"]["handles"]
    assert comparison.slices == {"freedrag": 1, "draggan": 2}
    from napari_freedrag.napari.compare import COMPARISON

    panel = viewer.layers[COMPARISON]
    width = edits[0].display().shape[1]
    np.testing.assert_array_equal(panel.data[:, :width], edits[0].display())
    np.testing.assert_array_equal(panel.data[:, -width:], edits[1].display())
    assert not w.controller.is_source(panel)  # generated: never offered as a source image
    assert panel.translate[-1] >= width  # beside the working image, not over it
    assert "FreeDrag = edit 1, DragGAN = edit 2" in w.status.value


def test_save_movie_writes_the_preview_frames_at_the_chosen_rate(ready, qtbot, tmp_path, notes):  # noqa: F811
    import imageio.v3 as iio

    w = ready
    w.movie_path.value = tmp_path / "run.gif"
    assert w.save_movie() is None and "keep preview frames" in notes[-1]
    handle = blob(w)
    place(w, [handle], [towards_centre(handle, 5)])
    w.keep_frames.value, w.preview_every.value, w.max_steps.value = True, 2, 12
    w.run()
    wait_idle(qtbot, w)
    w.fps.value = 4
    path = w.save_movie()
    frames = iio.imread(path, index=None)
    assert len(frames) == len(w.controller.frames()) >= 2
    assert iio.immeta(path, index=0)["duration"] == pytest.approx(250, abs=10)
    assert "saved movie" in w.status.value
    w.movie_path.value = tmp_path / "run.mp4"  # imageio-ffmpeg (the 'movie' extra)
    mp4 = w.save_movie()
    assert mp4 is not None and len(iio.imread(mp4, index=None)) == len(frames)
    assert iio.immeta(mp4, plugin="FFMPEG")["fps"] == pytest.approx(4)
