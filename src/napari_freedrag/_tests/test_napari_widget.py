"""The napari experience: the FreeDrag dock widget, its layers, Run / Stop, bad input.

A tiny random-weight StyleGAN2 (32 px, a few milliseconds a step) stands in for a trained model:
these tests check what the user sees in the viewer, not picture quality.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_freedrag.napari import layers as L
from napari_freedrag.testing import TINY, BackendWrapper, random_backend

pytestmark = pytest.mark.napari
napari = pytest.importorskip("napari")


def tiny_backend():
    return random_backend(TINY, "tiny")


class PacedBackend(BackendWrapper):
    """The tiny model at a real model's pace (50 ms a step): a whole drag of it takes
    0.15 s, less than the display's first shows, so Stop could not land mid-run."""

    def session(self, start, mask, method):
        return PacedSession(self.inner.session(start, mask, method))


class PacedSession:
    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def features(self, latent, boxes=None):
        import time

        time.sleep(0.05)
        return self._inner.features(latent, boxes)


class BrokenBackend(BackendWrapper):
    """A backend whose edits crash inside the worker, as a bug would."""

    def session(self, start, mask, method):
        raise RuntimeError("simulated crash inside the worker")


@pytest.fixture
def notes():
    """Messages of every napari notification shown during the test."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []

    def record(event):
        seen.append(str(getattr(event, "message", event)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    """A docked FreeDrag widget showing seed 0 of the tiny model."""
    from napari_freedrag.napari.widget import FreeDragWidget

    viewer = make_napari_viewer()
    w = FreeDragWidget(viewer, backend=tiny_backend())
    viewer.window.add_dock_widget(w, name="FreeDrag")
    worker = w.new_image()
    qtbot.waitUntil(lambda: not w.controller.running, timeout=120_000)
    w.max_steps.value = 6
    assert worker is not None and len(w.controller.history) == 1
    return w


def owned(w, role):
    """The widget's owned layer for ``role`` (handles, targets, mask, arrows, image)."""
    layer = w.controller.layers.get(role)
    assert layer is not None, f"no owned {role} layer"
    return layer


def wait_run(qtbot, w, worker):
    assert worker is not None, "Run did not start"
    qtbot.waitUntil(lambda: not w.controller.running, timeout=180_000)


def layer_snapshot(viewer):
    return {
        layer.name: (np.array(layer.data, copy=True), repr(layer.metadata))
        for layer in viewer.layers
    }


def assert_unchanged(viewer, before):
    after = layer_snapshot(viewer)
    assert list(after) == list(before)
    for name, (data, meta) in before.items():
        np.testing.assert_array_equal(after[name][0], data, err_msg=f"layer {name!r} changed")
        assert after[name][1] == meta, f"metadata of {name!r} changed"


def test_whole_flow_place_points_run_and_keep_the_edit(widget, qtbot):
    controller = widget.controller
    working = owned(widget, L.WORKING)
    assert working.data.shape == (32, 32, 3) and working.metadata["generated"] is True
    assert working.name == "FreeDrag result (generated)"
    owned(widget, L.HANDLES).add([[16.0, 8.0]])
    owned(widget, L.TARGETS).add([[16.0, 24.0]])
    np.testing.assert_allclose(owned(widget, L.ARROWS).data[0], [[16, 8], [0, 16]])

    widget.preview_every.value = 2
    worker = widget.run()
    assert "running" in widget.status.value  # said at once, before any step
    assert not widget.run_button.enabled and widget.stop_button.enabled
    wait_run(qtbot, widget, worker)

    assert len(controller.history) == 2 and controller.history.current_index == 1
    assert widget.run_button.enabled
    moved = owned(widget, L.HANDLES).data[0]
    assert abs(moved[1] - 24.0) < 16.0 - 2.0, "the handle should have moved toward the target"
    entry = controller.history[1].entry
    assert entry["generated"] is True and entry["method"] == "freedrag"
    assert entry["instruction"]["handles"] == [[16.0, 8.0]]
    assert entry["instruction"]["targets"] == [[16.0, 24.0]]
    assert entry["instruction"]["continued_from_edit"] == 0
    assert entry["parameters"]["max_steps"] == 6 and entry["model"] == "tiny"
    np.testing.assert_array_equal(owned(widget, L.WORKING).data, controller.history[1].display())
    assert "edit 1" in widget.status.value
    np.testing.assert_allclose(owned(widget, L.ARROWS).data[0, 0], moved)  # arrow follows


def test_a_frozen_event_loop_does_not_slow_the_drag(widget, qtbot):
    """The worker never waits for the main thread: a window busy with something else (here:
    not turning its event loop at all) still gets the whole drag, shown when it is free."""
    import time

    controller = widget.controller
    owned(widget, L.HANDLES).add([[10.0, 10.0]])
    owned(widget, L.TARGETS).add([[10.0, 30.0]])
    widget.max_steps.value = 40
    widget.run()
    run = controller.active_run
    # A worker waiting for the main thread at each step would need far longer than this
    # (the drag alone takes a few seconds).
    deadline = time.monotonic() + 60
    while not run.finished and time.monotonic() < deadline:
        time.sleep(0.01)  # the main thread is busy: no Qt events are processed
    assert run.finished and run.result.steps == 40
    assert len(controller.history) == 1  # nothing is shown before the loop turns again
    qtbot.waitUntil(lambda: not controller.running, timeout=60_000)
    assert len(controller.history) == 2 and controller.history[1].entry["steps"] == 40


def test_steps_are_shown_less_often_when_repaints_are_slow():
    from napari_freedrag.napari.job import DISPLAY_SHARE, SHOW_HZ, TICK_S, Pace

    fast, slow = Pace(last_tick=0.0), Pace(last_tick=0.0)
    for k in range(1, 5):  # ticks on time: the event loop is free
        fast.tick(k * TICK_S)
    fast.shown()
    assert fast.gap_s == pytest.approx(1.0 / SHOW_HZ)
    slow.tick(TICK_S + 0.2)  # the last show's repaint held the loop for 0.2 s
    slow.shown()
    assert slow.gap_s == pytest.approx(0.2 / DISPLAY_SHARE)
    slow.tick(100.0)  # a frozen window: never more than a second between shown steps
    slow.shown()
    assert slow.gap_s == 1.0


def test_stop_keeps_at_most_one_step_beyond_the_last_shown(widget, qtbot):
    controller = widget.controller
    edit = controller.history[0]
    edit.backend = PacedBackend(edit.backend)
    owned(widget, L.HANDLES).add([[10.0, 10.0]])
    owned(widget, L.TARGETS).add([[10.0, 30.0]])
    widget.max_steps.value = 500
    shown = []
    controller.progress.connect(lambda step, total: shown.append(step))
    worker = widget.run()
    qtbot.waitUntil(lambda: len(shown) >= 2, timeout=60_000)
    widget.stop_button.clicked.emit()
    last_shown = shown[-1]
    wait_run(qtbot, widget, worker)
    entry = controller.history[-1].entry
    assert entry["stopped"] is True
    assert last_shown <= entry["steps"] <= last_shown + 1
    assert f"kept step {entry['steps']}" in widget.status.value
    np.testing.assert_allclose(
        owned(widget, L.HANDLES).data[0], entry["instruction"]["final_points"][0]
    )


def test_browsing_edits_and_running_from_an_earlier_one_keeps_every_edit(widget, qtbot):
    from napari_freedrag.napari.api import napari_drag

    viewer, controller = widget.viewer, widget.controller
    for target, method in (([16.0, 26.0], "freedrag"), ([4.0, 26.0], "draggan")):
        napari_drag(viewer, handles=[[16.0, 6.0]], targets=[target], max_steps=4, method=method)
    assert [e.entry.get("method") for e in controller.history] == [None, "freedrag", "draggan"]
    images = [edit.display() for edit in controller.history]
    assert not np.array_equal(images[1], images[2])

    assert controller.undo() is controller.history[1]  # back to the first edit
    np.testing.assert_array_equal(owned(widget, L.WORKING).data, images[1])
    assert controller.redo() is controller.history[2]
    controller.select_edit(1)
    widget.max_steps.value = 2
    wait_run(qtbot, widget, widget.run())
    assert len(controller.history) == 4  # nothing deleted: the new edit is appended
    assert controller.history[3].parent == 1
    assert controller.undo() is controller.history[1]


def test_max_steps_zero_adds_no_edit(widget, notes):
    owned(widget, L.HANDLES).add([[10.0, 10.0]])
    owned(widget, L.TARGETS).add([[10.0, 20.0]])
    widget.max_steps.value = 0
    assert widget.run() is None
    assert any("max steps is 0" in note for note in notes), notes
    assert len(widget.controller.history) == 1


def test_switching_method_shows_its_preset(widget):
    widget.method.value = "draggan"
    assert widget.l.native.isHidden() and widget.d.native.isHidden()
    assert widget.lr.value == pytest.approx(0.001)  # DragGAN's StyleGAN2 learning rate
    widget.method.value = "freedrag"
    assert not widget.l.native.isHidden() and widget.lr.value == pytest.approx(0.002)


def _unequal(w):
    owned(w, L.HANDLES).add([[5.0, 5.0], [6.0, 6.0]])
    owned(w, L.TARGETS).add([[9.0, 9.0]])


def _no_points(w):
    pass


def _outside(w):
    owned(w, L.HANDLES).add([[5.0, 5.0]])
    owned(w, L.TARGETS).add([[5.0, 40.0]])


def _wrong_mask(w):
    owned(w, L.HANDLES).add([[5.0, 5.0]])
    owned(w, L.TARGETS).add([[5.0, 20.0]])
    owned(w, L.MASK).data = np.ones((8, 8), np.uint8)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (_unequal, "2 handle(s) but 1 target(s)"),
        (_no_points, "no handle points"),
        (_outside, "outside the 32x32 image"),
        (_wrong_mask, "does not match the image size"),
    ],
)
def test_bad_points_and_masks_notify_and_change_nothing(widget, notes, setup, message):
    setup(widget)
    before = layer_snapshot(widget.viewer)
    assert widget.run() is None
    assert any(message in note for note in notes), notes
    assert not widget.controller.running and widget.run_button.enabled
    assert_unchanged(widget.viewer, before)


def test_a_point_inside_the_last_pixel_is_accepted(widget, qtbot):
    """One rule, the engine's: a point on the drawn part of the last pixel is inside."""
    owned(widget, L.HANDLES).add([[16.0, 8.0]])
    owned(widget, L.TARGETS).add([[16.0, 31.4]])
    widget.max_steps.value = 1
    wait_run(qtbot, widget, widget.run())
    assert len(widget.controller.history) == 2


def test_deleting_a_handle_deletes_its_target(widget):
    handles, targets = owned(widget, L.HANDLES), owned(widget, L.TARGETS)
    handles.add([[4.0, 4.0]])
    targets.add([[4.0, 9.0]])
    handles.add([[20.0, 4.0]])
    targets.add([[20.0, 9.0]])
    handles.remove([0])
    np.testing.assert_allclose(targets.data, [[20.0, 9.0]])  # the pair went together
    targets.remove([0])
    assert len(handles.data) == 0
    assert len(owned(widget, L.ARROWS).data) == 0


def test_deleted_owned_layers_come_back_on_run(widget, notes):
    viewer = widget.viewer
    for role in (L.HANDLES, L.WORKING, L.ARROWS):
        viewer.layers.remove(owned(widget, role))
    assert widget.run() is None
    assert any("no handle points" in note for note in notes), notes
    for role in (L.HANDLES, L.WORKING, L.ARROWS):
        owned(widget, role)
    np.testing.assert_array_equal(
        owned(widget, L.WORKING).data, widget.controller.history[0].display()
    )


def test_run_while_running_is_refused(widget, qtbot, notes):
    owned(widget, L.HANDLES).add([[10.0, 10.0]])
    owned(widget, L.TARGETS).add([[10.0, 30.0]])
    worker = widget.run()
    assert widget.run() is None
    assert any("already running" in note for note in notes)
    wait_run(qtbot, widget, worker)
    assert len(widget.controller.history) == 2  # one run, one edit


def test_a_crash_in_the_worker_is_a_notification_and_changes_nothing(widget, qtbot, notes):
    viewer = widget.viewer
    edit = widget.controller.history[0]
    edit.backend = BrokenBackend(edit.backend)
    owned(widget, L.HANDLES).add([[10.0, 10.0]])
    owned(widget, L.TARGETS).add([[10.0, 30.0]])
    before = layer_snapshot(viewer)
    wait_run(qtbot, widget, widget.run())
    assert any("simulated crash inside the worker" in note for note in notes), notes
    assert_unchanged(viewer, before)
    assert widget.run_button.enabled and len(widget.controller.history) == 1


def test_missing_and_hostile_model_files_notify(widget, qtbot, notes, tmp_path):
    import pickle

    class Hostile:
        def __reduce__(self):
            return (print, ("pwned",))

    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps({"G_ema": Hostile()}))
    widget.backend = None
    before = layer_snapshot(widget.viewer)
    for path in (tmp_path / "missing.pkl", hostile):
        widget.set_model(str(path))
        assert widget.model_spec() == str(path)
        worker = widget.new_image()
        qtbot.waitUntil(lambda: not widget.controller.running, timeout=120_000)
        assert worker is not None
    assert len(notes) == 2, notes
    assert "missing.pkl" in notes[0] and "hostile.pkl" in notes[1]
    assert_unchanged(widget.viewer, before)


def test_frames_export_and_save_provenance(widget, qtbot, tmp_path):
    from napari_freedrag.io import read_provenance
    from napari_freedrag.napari.export import export_frames

    controller = widget.controller
    owned(widget, L.HANDLES).add([[16.0, 8.0]])
    owned(widget, L.TARGETS).add([[16.0, 20.0]])
    widget.keep_frames.value = True
    widget.preview_every.value = 2
    wait_run(qtbot, widget, widget.run())
    frames = controller.frames()
    assert frames.shape[1:] == (32, 32, 3) and frames.shape[0] >= 3
    written = export_frames(frames, tmp_path / "frames", provenance=controller.current_edit.entry)
    assert len(list(written.glob("frame_*.png"))) == frames.shape[0]
    assert export_frames(frames, tmp_path / "run.gif").stat().st_size > 0

    widget.save_path.value = tmp_path / "edit.png"
    saved = widget.save()
    record = read_provenance(saved)
    assert record["model"] == "tiny" and record["instruction"] == "drag (16, 8) -> (16, 20)"
    assert record["parameters"]["max_steps"] == 6 and record["edit"]["generated"] is True
    assert "Generated content" in record["notice"]
    assert "saved" in widget.status.value and str(saved) in widget.status.value


def test_save_failures_are_one_notification_and_the_status_says_so(widget, notes, tmp_path):
    widget.save_path.value = tmp_path / "edit.png"
    assert widget.save() is not None
    for bad in ("/proc/freedrag/edit.tif", str(tmp_path / "edit.jpg")):
        notes.clear()
        widget.save_path.value = bad
        assert widget.save() is None
        assert len(notes) == 1 and "FreeDrag:" in notes[0], notes
        assert "save failed" in widget.status.value
    assert not (tmp_path / "edit.jpg").exists()


def test_close_and_reopen_keeps_edits_and_frees_the_old_widget(make_napari_viewer, qtbot):
    import gc
    import weakref

    from napari_freedrag.napari.widget import FreeDragWidget

    viewer = make_napari_viewer()
    first = FreeDragWidget(viewer, backend=tiny_backend())
    viewer.window.add_dock_widget(first, name="FreeDrag")
    wait_run(qtbot, first, first.new_image())
    controller, listeners = first.controller, len(viewer.dims.events.point.callbacks)
    closed = weakref.ref(first)
    viewer.window.remove_dock_widget(first.native)
    del first
    qtbot.wait(20)
    gc.collect()
    assert closed() is None, "the closed widget is still referenced"

    again = FreeDragWidget(viewer, backend=tiny_backend())
    viewer.window.add_dock_widget(again, name="FreeDrag")
    assert again.controller is controller
    assert len(viewer.dims.events.point.callbacks) == listeners
    assert len(again.controller.history) == 1
    viewer.add_image(np.zeros((8, 8)), name="mine")
    assert "mine" in [getattr(layer, "name", None) for layer in again.source.choices]
    owned(again, L.HANDLES).add([[3.0, 3.0]])
    owned(again, L.TARGETS).add([[3.0, 9.0]])
    assert len(owned(again, L.ARROWS).data) == 1
    again.max_steps.value = 2
    wait_run(qtbot, again, again.run())
    assert len(again.controller.history) == 2
    assert "edit 1" in again.status.value


def test_widget_from_the_plugins_menu_runs_a_drag(make_napari_viewer, qtbot):
    """What *Plugins -> FreeDrag* does: npe2 builds the widget (with a proxied viewer)."""
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-freedrag", "FreeDrag")
    from napari_freedrag.napari.widget import FreeDragWidget

    assert isinstance(w, FreeDragWidget)
    assert "cells" in w.model.choices and w.device.value == "auto"
    w.seed.value = 1
    w.new_image()
    qtbot.waitUntil(lambda: len(w.controller.history) == 1, timeout=60_000)
    qtbot.waitUntil(lambda: not w.controller.running, timeout=60_000)
    owned(w, L.HANDLES).data = [[30.0, 20.0]]
    owned(w, L.TARGETS).data = [[30.0, 26.0]]
    w.max_steps.value = 2
    wait_run(qtbot, w, w.run())
    assert len(w.controller.history) == 2


def test_clicks_alternate_between_handles_and_targets(widget):
    viewer = widget.viewer
    handles, targets = owned(widget, L.HANDLES), owned(widget, L.TARGETS)
    assert viewer.layers.selection.active is handles and handles.mode == "add"
    handles.add([[4.0, 4.0]])
    assert viewer.layers.selection.active is targets and targets.mode == "add"
    targets.add([[4.0, 9.0]])
    assert viewer.layers.selection.active is handles


def test_napari_drag_raises_one_clear_error_and_changes_nothing(widget):
    from napari_freedrag.errors import InputError
    from napari_freedrag.napari.api import napari_drag

    before = layer_snapshot(widget.viewer)
    with pytest.raises(InputError, match="does not match the image size"):
        napari_drag(widget.viewer, handles=[[3, 3]], targets=[[3, 9]], mask=np.ones((4, 4)))
    with pytest.raises(InputError, match="max_steps"):
        napari_drag(widget.viewer, handles=[[3, 3]], targets=[[3, 9]], max_steps=-1)
    assert_unchanged(widget.viewer, before)
    assert not widget.controller.running


def test_the_history_control_browses_edits_without_a_dims_axis(widget, qtbot):
    viewer, controller = widget.viewer, widget.controller
    owned(widget, L.HANDLES).add([[16.0, 8.0]])
    owned(widget, L.TARGETS).add([[16.0, 20.0]])
    wait_run(qtbot, widget, widget.run())
    assert viewer.dims.ndim == 2  # no axis was added for the history
    control = widget.history
    assert control.slider.max == 1 and control.slider.value == 1
    control.slider.value = 0
    assert controller.history.current_index == 0
    np.testing.assert_array_equal(owned(widget, L.WORKING).data, controller.history[0].display())
    control.redo_button.clicked.emit()
    assert controller.history.current_index == 1 and "from edit 0" in control.about.value
    control.undo_button.clicked.emit()
    assert controller.history.current_index == 0 and len(controller.history) == 2
