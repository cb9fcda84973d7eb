"""The napari experience: the FreeDrag dock widget, its layers, Run / Stop, bad input.

A tiny random-weight StyleGAN2 (32 px, about 0.1 s a step) stands in for a trained model:
these tests check what the user sees in the viewer, not picture quality.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_freedrag._tests.cli_tiny_model import TINY_CONFIG as TINY
from napari_freedrag.napari import layers as L

pytestmark = pytest.mark.napari
napari = pytest.importorskip("napari")


def tiny_backend():
    from napari_freedrag.models.stylegan2.backend import StyleGAN2Backend
    from napari_freedrag.models.stylegan2.network import Generator

    torch.manual_seed(0)
    return StyleGAN2Backend(Generator(**TINY), "tiny")


class BrokenBackend:
    """A backend whose edits crash inside the worker, as a bug would."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.kind, self.device = inner.name, inner.kind, inner.device

    def preset(self, method, image_size):
        return self.inner.preset(method, image_size)

    def sample(self, seed, truncation=0.7):
        return self.inner.sample(seed, truncation)

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
    assert worker is not None and L.EDITS in viewer.layers
    return w


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
    viewer = widget.viewer
    assert viewer.layers[L.EDITS].data.shape == (1, 32, 32, 3)
    assert viewer.layers[L.WORKING].metadata["generated"] is True
    viewer.layers[L.HANDLES].add([[16.0, 8.0]])
    viewer.layers[L.TARGETS].add([[16.0, 24.0]])
    arrows = viewer.layers[L.ARROWS].data
    np.testing.assert_allclose(arrows[0], [[16, 8], [0, 16]])  # arrow handle -> target

    live = []  # what the viewer showed at each step (the widget's handler runs first)

    def seen(step):
        shown = viewer.layers[L.WORKING].data
        live.append(
            (
                np.allclose(viewer.layers[L.HANDLES].data, step.points),
                step.image is None or np.array_equal(shown, step.image),
            )
        )

    widget.preview_every.value = 2
    worker = widget.run()
    worker.yielded.connect(seen)
    assert not widget.run_button.enabled and widget.stop_button.enabled
    wait_run(qtbot, widget, worker)

    edits = viewer.layers[L.EDITS]
    assert edits.data.shape[0] == 2
    assert widget.run_button.enabled
    assert len(live) >= 2 and all(points and image for points, image in live), live
    moved = viewer.layers[L.HANDLES].data[0]
    assert abs(moved[1] - 24.0) < 16.0 - 2.0, "the handle should have moved toward the target"
    entry = edits.metadata["edits"][1]
    assert entry["generated"] is True and entry["method"] == "freedrag"
    assert entry["instruction"]["handles"] == [[16.0, 8.0]]
    assert entry["instruction"]["targets"] == [[16.0, 24.0]]
    assert entry["instruction"]["continued_from_slice"] == 0
    assert entry["parameters"]["max_steps"] == 6 and entry["model"] == "tiny"
    np.testing.assert_array_equal(viewer.layers[L.WORKING].data, edits.data[1])
    assert widget.controller.layers.selected_slice() == 1
    assert "edit 1" in widget.status.value
    # the arrow follows the moved handle
    np.testing.assert_allclose(viewer.layers[L.ARROWS].data[0, 0], moved)


def test_stop_keeps_the_last_finished_step(widget, qtbot):
    viewer = widget.viewer
    viewer.layers[L.HANDLES].add([[10.0, 10.0]])
    viewer.layers[L.TARGETS].add([[10.0, 30.0]])
    widget.max_steps.value = 500
    worker = widget.run()
    worker.yielded.connect(lambda step: widget.stop_button.clicked.emit())
    wait_run(qtbot, widget, worker)
    entry = viewer.layers[L.EDITS].metadata["edits"][-1]
    assert entry["stopped"] is True
    assert 1 <= entry["steps"] < 500
    assert "stopped" in widget.status.value
    np.testing.assert_allclose(
        viewer.layers[L.HANDLES].data[0], entry["instruction"]["final_points"][0]
    )


def test_run_on_an_earlier_slice_continues_from_it(widget, qtbot):
    from napari_freedrag.napari.api import napari_drag

    viewer = widget.viewer
    for target, method in (([16.0, 26.0], "freedrag"), ([4.0, 26.0], "draggan")):
        napari_drag(viewer, handles=[[16.0, 6.0]], targets=[target], max_steps=4, method=method)
    edits = viewer.layers[L.EDITS]
    assert [e["method"] for e in edits.metadata["edits"][1:]] == ["freedrag", "draggan"]
    assert edits.data.shape[0] == 3
    assert not np.array_equal(edits.data[1], edits.data[2])

    widget.controller.layers.select_slice(1)  # step back: undo the second edit
    np.testing.assert_array_equal(viewer.layers[L.WORKING].data, edits.data[1])
    widget.max_steps.value = 0  # 0 steps renders the start state unchanged
    wait_run(qtbot, widget, widget.run())
    assert edits.data.shape[0] == 4
    np.testing.assert_array_equal(edits.data[3], edits.data[1])
    assert edits.metadata["edits"][3]["parent"] == 1


def test_switching_method_shows_its_preset(widget):
    widget.method.value = "draggan"
    assert widget.l.native.isHidden() and widget.d.native.isHidden()
    assert widget.lr.value == pytest.approx(0.001)  # DragGAN's StyleGAN2 learning rate
    widget.method.value = "freedrag"
    assert not widget.l.native.isHidden() and widget.lr.value == pytest.approx(0.002)


def _unequal(viewer):
    viewer.layers[L.HANDLES].add([[5.0, 5.0], [6.0, 6.0]])
    viewer.layers[L.TARGETS].add([[9.0, 9.0]])


def _no_points(viewer):
    pass


def _outside(viewer):
    viewer.layers[L.HANDLES].add([[5.0, 5.0]])
    viewer.layers[L.TARGETS].add([[5.0, 40.0]])


def _wrong_mask(viewer):
    _outside(viewer)
    viewer.layers[L.TARGETS].data = [[5.0, 20.0]]
    viewer.layers[L.MASK].data = np.ones((8, 8), np.uint8)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (_unequal, "2 handle(s) but 1 target(s)"),
        (_no_points, "no drag points"),
        (_outside, "outside the 32x32 image"),
        (_wrong_mask, "the mask is 8x8 but the image is 32x32"),
    ],
)
def test_bad_points_and_masks_notify_and_change_nothing(widget, notes, setup, message):
    setup(widget.viewer)
    before = layer_snapshot(widget.viewer)
    assert widget.run() is None
    assert any(message in note for note in notes), notes
    assert not widget.controller.running and widget.run_button.enabled
    assert_unchanged(widget.viewer, before)


def test_deleted_owned_layers_come_back_on_run(widget, notes):
    viewer = widget.viewer
    for name in (L.HANDLES, L.WORKING, L.ARROWS):
        viewer.layers.remove(name)
    assert widget.run() is None
    assert any("no drag points" in note for note in notes)
    assert all(name in viewer.layers for name in (L.HANDLES, L.WORKING, L.ARROWS))
    np.testing.assert_array_equal(viewer.layers[L.WORKING].data, viewer.layers[L.EDITS].data[0])


def test_run_while_running_is_refused(widget, qtbot, notes):
    viewer = widget.viewer
    viewer.layers[L.HANDLES].add([[10.0, 10.0]])
    viewer.layers[L.TARGETS].add([[10.0, 30.0]])
    worker = widget.run()
    assert widget.run() is None
    assert any("already running" in note for note in notes)
    wait_run(qtbot, widget, worker)
    assert viewer.layers[L.EDITS].data.shape[0] == 2  # one run, one edit


def test_a_crash_in_the_worker_is_a_notification_and_changes_nothing(widget, qtbot, notes):
    viewer = widget.viewer
    record = widget.controller.layers.records()[0]
    record.backend = BrokenBackend(record.backend)
    viewer.layers[L.HANDLES].add([[10.0, 10.0]])
    viewer.layers[L.TARGETS].add([[10.0, 30.0]])
    before = layer_snapshot(viewer)
    wait_run(qtbot, widget, widget.run())
    assert any("simulated crash inside the worker" in note for note in notes), notes
    assert_unchanged(viewer, before)
    assert widget.run_button.enabled


def test_missing_and_hostile_model_files_notify(widget, qtbot, notes, tmp_path):
    import pickle

    pytest.importorskip("napari_freedrag.models.registry")

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


def test_points_are_converted_from_world_to_image_pixels(make_napari_viewer):
    viewer = make_napari_viewer()
    owned = L.OwnedLayers(viewer)
    image = np.zeros((20, 30, 3), np.uint8)
    owned.start_stack(image, {"model": "x"}, L.EditRecord(None, None), ((2.0, 0.5), (100.0, 7.0)))
    assert viewer.layers[L.EDITS].scale[-2:].tolist() == [2.0, 0.5]
    handles = viewer.layers[L.HANDLES]
    handles.scale, handles.translate = (1.0, 1.0), (0.0, 0.0)  # a user re-scaled the layer
    world = [100.0 + 2.0 * 4, 7.0 + 0.5 * 12]  # where image pixel (4, 12) is drawn
    handles.add(handles.world_to_data(world))
    np.testing.assert_allclose(owned.points_in_image(L.HANDLES), [[4.0, 12.0]])
    owned.set_points_from_image(L.TARGETS, [[10.0, 20.0]])
    np.testing.assert_allclose(viewer.layers[L.ARROWS].data[0], [[108, 13], [12, 4]])


def test_frames_saving_and_provenance(widget, qtbot, tmp_path):
    from napari_freedrag.io import read_provenance
    from napari_freedrag.napari.export import export_frames

    viewer = widget.viewer
    viewer.layers[L.HANDLES].add([[16.0, 8.0]])
    viewer.layers[L.TARGETS].add([[16.0, 20.0]])
    widget.keep_frames.value = True
    widget.preview_every.value = 2
    wait_run(qtbot, widget, widget.run())
    frames = viewer.layers[L.FRAMES]
    assert frames.data.shape[1:] == (1, 32, 32, 3) and frames.data.shape[0] >= 3
    assert frames.metadata["generated"] is True
    assert frames.translate[1] == 1  # attached to edit 1, which stays selected
    assert widget.controller.layers.selected_slice() == 1
    viewer.dims.set_point(0, frames.data.shape[0] - 1)  # play the movie to its end
    assert widget.controller.layers.selected_slice() == 1
    written = export_frames(frames, tmp_path / "frames")
    assert len(list(written.glob("frame_*.png"))) == frames.data.shape[0]
    assert export_frames(frames, tmp_path / "run.gif").stat().st_size > 0

    widget.save_path.value = tmp_path / "edit.png"
    saved = widget.save()
    record = read_provenance(saved)
    assert record["model"] == "tiny" and record["instruction"] == "drag (16, 8) -> (16, 20)"
    assert record["parameters"]["max_steps"] == 6 and record["edit"]["generated"] is True


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
    assert len(again.controller.layers.records()) == 1
    viewer.add_image(np.zeros((8, 8)), name="mine")
    assert "mine" in [getattr(layer, "name", None) for layer in again.source.choices]
    viewer.layers[L.HANDLES].add([[3.0, 3.0]])
    viewer.layers[L.TARGETS].add([[3.0, 9.0]])
    assert len(viewer.layers[L.ARROWS].data) == 1
    again.max_steps.value = 2
    wait_run(qtbot, again, again.run())
    assert viewer.layers[L.EDITS].data.shape[0] == 2
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
    qtbot.waitUntil(lambda: L.EDITS in viewer.layers, timeout=60_000)
    qtbot.waitUntil(lambda: not w.controller.running, timeout=60_000)
    viewer.layers[L.HANDLES].data = [[30.0, 20.0]]
    viewer.layers[L.TARGETS].data = [[30.0, 26.0]]
    w.max_steps.value = 2
    wait_run(qtbot, w, w.run())
    assert viewer.layers[L.EDITS].data.shape[0] == 2


def test_clicks_alternate_between_handles_and_targets(widget):
    viewer = widget.viewer
    handles, targets = viewer.layers[L.HANDLES], viewer.layers[L.TARGETS]
    assert viewer.layers.selection.active is handles and handles.mode == "add"
    handles.add([[4.0, 4.0]])
    assert viewer.layers.selection.active is targets and targets.mode == "add"
    targets.add([[4.0, 9.0]])
    assert viewer.layers.selection.active is handles


def test_sample_data_comes_from_the_model_and_is_marked_generated(make_napari_viewer, tmp_path):
    from napari_freedrag.models.cells import bundled_weights_path
    from napari_freedrag.models.stylegan2.checkpoint import save_checkpoint
    from napari_freedrag.napari.sample_data import sample_cells

    path = save_checkpoint(tmp_path / "tiny", TINY, tiny_backend().generator.state_dict())
    layers = sample_cells(seeds=(0, 1), model=str(path))
    assert [kwargs["metadata"]["seed"] for _, kwargs, _ in layers] == [0, 1]
    for data, kwargs, kind in layers:
        assert kind == "image" and data.shape == (32, 32, 3) and data.dtype == np.uint8
        assert "(generated)" in kwargs["name"] and kwargs["metadata"]["generated"] is True
    assert not np.array_equal(layers[0][0], layers[1][0])

    if not bundled_weights_path().is_file():
        pytest.skip("bundled cells weights not built in this checkout")
    viewer = make_napari_viewer()
    viewer.open_sample("napari-freedrag", "cells")
    assert len(viewer.layers) == 3 and all("(generated)" in layer.name for layer in viewer.layers)


def test_a_users_uint16_layer_is_edited_in_its_own_form_and_never_touched(
    make_napari_viewer, qtbot, tmp_path
):
    pytest.importorskip("diffusers")
    from napari_freedrag._tests.ldm_tiny import build_tiny_pipeline
    from napari_freedrag.models.ldm import load_ldm
    from napari_freedrag.napari.widget import FreeDragWidget

    backend = load_ldm(f"ldm:{build_tiny_pipeline(tmp_path / 'sd')}", "cpu", num_inference_steps=4)
    viewer = make_napari_viewer()
    rows, cols = np.mgrid[0:24, 0:40]
    stack = np.stack([(rows * 50 + cols * 20 + 1000 * t) for t in range(3)]).astype(np.uint16)
    cells = viewer.add_image(
        stack,
        name="cells",
        scale=(1.0, 0.5, 0.25),
        translate=(0, 10, 20),
        contrast_limits=(900, 4000),
    )
    original = stack.copy()
    viewer.dims.set_point(0, 2)  # the user looks at time point 2
    w = FreeDragWidget(viewer, backend=backend)
    viewer.window.add_dock_widget(w)
    assert [name for name, _ in w._source_choices()][1:] == ["cells"]
    w.source.value = cells
    wait_run(qtbot, w, w.new_image())

    edits = viewer.layers[L.EDITS]
    assert edits.data.shape == (1, 24, 40) and edits.data.dtype == np.uint16
    assert tuple(edits.contrast_limits) == (900, 4000) and not edits.rgb
    assert edits.scale[-2:].tolist() == [0.5, 0.25] and edits.translate[-2:].tolist() == [10, 20]
    assert edits.metadata["edits"][0]["source"] == "cells"
    # the reconstruction resembles time point 2 of the user's stack (bright), not point 0
    assert abs(float(edits.data[0].mean()) - float(stack[2].mean())) < abs(
        float(edits.data[0].mean()) - float(stack[0].mean())
    )
    world = cells.data_to_world([2, 12, 10])[-2:]
    viewer.layers[L.HANDLES].add(viewer.layers[L.HANDLES].world_to_data(world))
    np.testing.assert_allclose(w.controller.layers.points_in_image(L.HANDLES), [[12, 10]])
    viewer.layers[L.TARGETS].add(viewer.layers[L.TARGETS].world_to_data(world) + [0, 4])
    w.max_steps.value = 1
    wait_run(qtbot, w, w.run())
    assert edits.data.shape == (2, 24, 40) and edits.data.dtype == np.uint16
    np.testing.assert_array_equal(cells.data, original)
    assert cells.name == "cells" and "generated" not in cells.metadata


def test_napari_drag_raises_one_clear_error_and_changes_nothing(widget):
    from napari_freedrag.errors import InputError
    from napari_freedrag.napari.api import napari_drag

    before = layer_snapshot(widget.viewer)
    with pytest.raises(InputError, match="the mask is 4x4 but the image is 32x32"):
        napari_drag(widget.viewer, handles=[[3, 3]], targets=[[3, 9]], mask=np.ones((4, 4)))
    with pytest.raises(InputError, match="max_steps"):
        napari_drag(widget.viewer, handles=[[3, 3]], targets=[[3, 9]], max_steps=-1)
    assert_unchanged(widget.viewer, before)
    assert not widget.controller.running
