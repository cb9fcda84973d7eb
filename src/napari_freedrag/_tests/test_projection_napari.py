"""The viewer with a StyleGAN2 model and a user's image: project, show PSNR/SSIM, drag on.

The reconstruction and its edits are shown, saved and dragged in the source's form (dtype,
gray, range) over the part of the source plane the projection was made from.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_freedrag.errors import InputError

from .test_napari_widget import tiny_backend, wait_run

pytestmark = pytest.mark.napari
napari = pytest.importorskip("napari")


def field_of(shape) -> np.ndarray:
    """A smooth uint16 field well inside the dtype's range (not a model sample)."""
    rows, cols = np.mgrid[0 : shape[-2], 0 : shape[-1]]
    plane = 1000 + 40 * rows + 30 * cols + 800 * np.sin(cols / 4)
    if len(shape) == 2:
        return plane.astype(np.uint16)
    planes = [plane + 100 * z for z in range(shape[0])]  # every plane differs
    return np.stack(planes).astype(np.uint16)


def snapshot(layer) -> dict:
    return {
        "data": np.array(layer.data, copy=True),
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "units": tuple(str(u) for u in layer.units),
        "name": layer.name,
        "contrast_limits": tuple(layer.contrast_limits),
    }


def assert_untouched(layer, before, viewer, index) -> None:
    after = snapshot(layer)
    np.testing.assert_array_equal(after.pop("data"), before["data"])
    assert after == {k: v for k, v in before.items() if k != "data"}
    assert viewer.layers.index(layer) == index


@pytest.fixture
def docked(make_napari_viewer):
    from napari_freedrag.napari.widget import FreeDragWidget

    viewer = make_napari_viewer()
    data = field_of((40, 40))
    layer = viewer.add_image(data, name="cells", scale=(0.5, 0.5), contrast_limits=(0, 4000))
    w = FreeDragWidget(viewer, backend=tiny_backend())
    viewer.window.add_dock_widget(w)
    w.source.value = layer
    return w, layer, snapshot(layer)


def test_a_users_layer_is_projected_then_dragged_in_its_own_form(docked, qtbot):
    w, layer, before = docked
    seen = []
    w.controller.progress.connect(lambda step, total: seen.append((step, total)))
    assert not w.projection.native.isHidden()  # shown: a source is to be projected
    w.projection.value, w.projection_steps.value = "w", 30
    wait_run(qtbot, w, w.new_image())
    edit = w.controller.current_edit
    record = edit.entry["info"]["projection"]
    assert (record["mode"], record["steps"], record["stopped"]) == ("w", 30, False)
    assert record["conversion"]["resize"] == [[40, 40], [32, 32]]
    assert record["conversion"]["channels"].startswith("gray replicated")
    assert f"PSNR {record['psnr']:.1f} dB" in w.status.value
    assert seen and seen[-1] == (30, 30)  # the projection's progress reached the widget
    working = w.controller.layers.working
    # The reconstruction covers the source: its size, pixel size and dtype, gray.
    assert working.data.shape == (40, 40) and working.data.dtype == np.uint16
    assert not working.rgb and tuple(working.scale) == (0.5, 0.5)
    assert working.data.min() >= before["data"].min() - 1
    assert working.data.max() <= before["data"].max() + 1

    handles, targets = [[12.0, 12.0]], [[12.0, 16.0]]
    result = w.controller.run(handles=handles, targets=targets, max_steps=2, wait=True)
    assert result.steps == 2 and len(w.controller.history) == 2
    dragged = w.controller.current_edit
    assert dragged.parent == 0 and dragged.entry["source"]["dtype"] == "uint16"
    assert working.data.dtype == np.uint16 and working.data.shape == (40, 40)
    assert not np.array_equal(working.data, edit.display())  # the drag changed the image
    assert_untouched(layer, before, w.viewer, 0)
    w.source.native.setCurrentIndex(0)  # as a user picks "none": nothing to project
    assert w.projection.native.isHidden() and w.projection_steps.native.isHidden()


def test_a_non_square_plane_of_a_stack_is_projected_in_place(make_napari_viewer, tmp_path):
    """A (z, y, x) µm stack seen at z=2: the centre square of that plane is projected and
    shown exactly over it; z, the user's layer and its units are left as they were."""
    import tifffile

    from napari_freedrag.io import read_provenance
    from napari_freedrag.napari.runner import controller_for

    viewer = make_napari_viewer()
    data = field_of((3, 40, 48))
    layer = viewer.add_image(
        data, name="stack", scale=(2.0, 0.5, 0.25), translate=(10.0, 3.0, -4.0),
        units=("um", "um", "um"),
    )  # fmt: skip
    viewer.dims.set_current_step(0, 2)
    steps_before = tuple(viewer.dims.current_step)
    before = snapshot(layer)
    controller = controller_for(viewer)
    edit = controller.new_image(
        tiny_backend(), source=layer, projection={"mode": "w", "steps": 10}, wait=True
    )
    record = edit.entry["info"]["projection"]
    assert record["conversion"]["crop"] == [0, 40, 4, 44]
    assert edit.entry["placement"]["plane_index"] == [2]
    working = controller.layers.working
    assert working.data.shape == (1, 40, 40) and working.data.dtype == np.uint16
    # The crop's first pixel lies on the source's pixel (z=2, y=0, x=4) in world space.
    np.testing.assert_allclose(working.data_to_world((0, 0, 0)), layer.data_to_world((2, 0, 4)))
    np.testing.assert_allclose(working.data_to_world((0, 39, 39)), layer.data_to_world((2, 39, 43)))
    assert tuple(str(u) for u in working.units) == ("micrometer",) * 3
    # The projection targeted plane 2 (its own values), not plane 0.
    value_range = record["conversion"]["value_range"]
    assert value_range[0] == pytest.approx(float(data[2].min()))

    result = controller.run(handles=[[20.0, 20.0]], targets=[[20.0, 28.0]], max_steps=2, wait=True)
    assert result.steps == 2 and working.data.dtype == np.uint16
    # Saved as the user's data: uint16, the crop's size and µm pixel size, the projection.
    path = controller.save_selected(tmp_path / "edit.tif")
    with tifffile.TiffFile(path) as tif:
        saved, page = tif.asarray(), tif.pages[0]
        x_res, y_res = page.tags["XResolution"].value, page.tags["YResolution"].value
    assert saved.dtype == np.uint16 and saved.shape == (40, 40)
    np.testing.assert_array_equal(saved, working.data[0])
    assert x_res[0] / x_res[1] == pytest.approx(4.0) and y_res[0] / y_res[1] == pytest.approx(2.0)
    assert read_provenance(path)["source"]["name"] == "stack"
    assert tuple(viewer.dims.current_step) == steps_before
    assert_untouched(layer, before, viewer, 0)


def test_stop_during_the_projection_keeps_a_state_to_drag_from(docked, qtbot):
    w, layer, before = docked

    def press_stop(step, total):
        w.controller.progress.disconnect(press_stop)
        w.controller.stop()

    w.controller.progress.connect(press_stop)  # Stop at the first progress shown
    wait_run(qtbot, w, w.new_image())
    edit = w.controller.current_edit
    record = edit.entry["info"]["projection"]
    assert record["stopped"] and 0 < record["steps"] < 200
    assert "stopped" in w.status.value and "PSNR" in w.status.value
    assert w.controller.layers.working.data.dtype == np.uint16
    result = w.controller.run(handles=[[12.0, 12.0]], targets=[[12.0, 20.0]], max_steps=2,
                              wait=True)  # fmt: skip
    assert result.steps == 2 and not result.stopped  # the earlier Stop does not linger
    assert w.controller.layers.working.data.dtype == np.uint16
    assert_untouched(layer, before, w.viewer, 0)


def test_a_projection_with_nan_pixels_is_refused_with_one_message(make_napari_viewer, qtbot):
    from napari_freedrag.napari.runner import controller_for

    viewer = make_napari_viewer()
    data = field_of((40, 40)).astype(np.float32)
    data[3, 5] = np.nan
    layer = viewer.add_image(data, name="holes")
    controller = controller_for(viewer)
    with pytest.raises(InputError, match="NaN"):
        controller.new_image(tiny_backend(), source=layer, wait=True)
    assert not len(controller.history) and controller.layers.working is None
    assert np.isnan(layer.data[3, 5]) and layer.name == "holes"
