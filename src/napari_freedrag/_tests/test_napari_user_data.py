"""A scientist's own layers in the viewer: only ever read, and every result keeps their form.

The user's data here is what a microscopist has open: a uint16 (z, y, x) stack with a µm
scale, a translate and contrast limits, viewed at z=3; an RGB image; a Labels layer named
``mask`` and Points layers named ``handles`` and ``targets``.  The model is the analytic
blob renderer (milliseconds a step), which can stand in for an inverting model.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_freedrag._tests.napari_backends import InvertingAnalytic
from napari_freedrag.napari import layers as L

pytestmark = pytest.mark.napari
napari = pytest.importorskip("napari")

SIZE = 64
PLUGIN = "napari-freedrag"
Z_SHOWN = 3


def user_layers(viewer):
    """The layers a user has open before touching FreeDrag."""
    rng = np.random.RandomState(0)
    stack = (144 + rng.rand(6, SIZE, SIZE) * (2775 - 144)).astype(np.uint16)
    stack[:, 0, 0], stack[:, 1, 1] = 144, 2775  # the full range on every plane
    um = ("um", "um", "um")
    image = viewer.add_image(
        stack, name="cells", scale=(2.0, 0.5, 0.5), translate=(1.0, 10.0, 20.0), units=um,
        contrast_limits=(250, 2000),
    )  # fmt: skip
    labels = np.zeros((128, 128), np.uint8)
    labels[10:20, 10:20], labels[40:60, 70:90] = 3, 7
    mask = viewer.add_labels(labels, name="mask", scale=(0.5, 0.5), units=um[1:])
    handles = viewer.add_points([[4.0, 5.0]], name="handles", units=um[1:])
    targets = viewer.add_points([[6.0, 7.0], [1, 2], [3, 4]], name="targets", units=um[1:])
    viewer.dims.set_current_step(0, Z_SHOWN)
    return image, mask, handles, targets


def snapshot(layers):
    """Everything a user would notice about their layers (and their order)."""
    return [
        (
            layer.name,
            np.array(layer.data, copy=True),
            tuple(np.asarray(layer.scale).tolist()),
            tuple(np.asarray(layer.translate).tolist()),
            tuple(str(u) for u in layer.units),
            repr(layer.metadata),
        )
        for layer in layers
    ]


def assert_same(before, layers):
    after = snapshot(layers)
    assert [a[0] for a in after] == [b[0] for b in before]
    for was, now in zip(before, after, strict=True):
        np.testing.assert_array_equal(now[1], was[1], err_msg=f"{was[0]} data changed")
        assert now[2:] == was[2:], f"{was[0]} changed"


def user_order(viewer, controller):
    return [layer.name for layer in viewer.layers if not controller.layers.owns(layer)]


@pytest.fixture
def scene(make_napari_viewer):
    from napari_freedrag.napari.runner import controller_for

    viewer = make_napari_viewer()
    mine = user_layers(viewer)
    return viewer, controller_for(viewer), mine


def edit_the_stack(controller, image, steps=8):
    controller.new_image(InvertingAnalytic(SIZE), source=image, wait=True)
    return controller.run(handles=[[20, 20]], targets=[[20, 27]], mask=None, max_steps=steps,
                          wait=True)  # fmt: skip


def test_user_layers_are_only_read_and_the_view_stays_on_their_plane(scene, tmp_path):
    viewer, controller, mine = scene
    image = mine[0]
    before, order = snapshot(mine), [layer.name for layer in viewer.layers]
    step = tuple(viewer.dims.current_step)

    edit_the_stack(controller, image)
    assert tuple(viewer.dims.current_step) == step
    controller.new_image(InvertingAnalytic(SIZE), source=image, wait=True)  # a second one
    controller.undo()
    controller.select_edit(1)
    controller.save_selected(tmp_path / "edit.tif")
    for role in (L.HANDLES, L.TARGETS, L.MASK, L.ARROWS, L.WORKING):
        viewer.layers.remove(controller.layers.get(role))
    controller.run(handles=[[20, 20]], targets=[[20, 24]], mask=None, max_steps=2, wait=True)

    assert tuple(viewer.dims.current_step) == step
    assert_same(before, mine)
    assert user_order(viewer, controller) == order
    assert all(viewer.layers[name] is layer for name, layer in zip(order, mine, strict=True))
    assert len(controller.history) == 4  # two images, two edits; nothing lost
    # the user's own "mask", "handles" and "targets" were never used as the plugin's
    assert controller.layers.get(L.MASK).name == "FreeDrag mask"
    assert controller.layers.get(L.HANDLES).name == "FreeDrag handles"
    assert viewer.dims.axis_labels[0] != "edit"


def test_the_result_sits_on_the_edited_plane_in_the_source_form(scene):
    viewer, controller, (image, *_) = scene
    result = edit_the_stack(controller, image)
    working = controller.layers.working
    assert working.data.shape == (1, SIZE, SIZE) and working.data.dtype == np.uint16
    assert not working.rgb and tuple(working.contrast_limits) == (250, 2000)
    assert [str(u) for u in working.units] == ["micrometer"] * 3
    for pixel in ((0, 0), (17, 40)):  # the same world point as the source's pixel at z=3
        np.testing.assert_allclose(
            working.data_to_world([0, *pixel]), image.data_to_world([Z_SHOWN, *pixel])
        )
    entry = controller.current_edit.entry
    assert entry["placement"]["plane_index"] == [Z_SHOWN]
    assert entry["source"]["name"] == "cells" and entry["source"]["dtype"] == "uint16"
    assert entry["source"]["contrast_limits"] == [250.0, 2000.0]
    assert entry["source"]["scale"] == [2.0, 0.5, 0.5]
    assert entry["source"]["intensity"]["clipped_pixels"] == 0
    # the model's black and white map back to the plane's full range, not the contrast window
    form = controller.current_edit.form
    for value, expected in ((0, 144), (255, 2775)):
        assert form.display(np.full((SIZE, SIZE, 3), value, np.uint8)).max() == expected
    assert result.steps >= 1
    # the plugin's points, mask and arrows are above the images it added
    names = [layer.name for layer in viewer.layers]
    assert names[-4:] == [L.NAMES[r] for r in L.OVERLAYS]


def test_overlays_stay_on_top_of_images_added_later(scene):
    viewer, controller, (image, *_) = scene
    edit_the_stack(controller, image, steps=1)
    viewer.add_image(np.zeros((8, 8), np.uint8), name="later")
    controller.new_image(InvertingAnalytic(SIZE), source=image, wait=True)
    names = [layer.name for layer in viewer.layers]
    assert names[-4:] == [L.NAMES[r] for r in L.OVERLAYS]


def test_saved_tiff_keeps_dtype_pixel_size_unit_and_says_it_is_generated(scene, tmp_path):
    import tifffile

    from napari_freedrag.io import read_provenance

    viewer, controller, (image, *_) = scene
    edit_the_stack(controller, image)
    path = controller.save_selected(tmp_path / "edit.tif")
    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        page = tif.pages[0]
        x_res, y_res = page.tags["XResolution"].value, page.tags["YResolution"].value
        unit = tif.imagej_metadata["unit"]
    assert data.dtype == np.uint16 and data.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(data, controller.layers.working.data[0])
    assert x_res[0] / x_res[1] == pytest.approx(2.0) and y_res[0] / y_res[1] == pytest.approx(2.0)
    assert unit == "um"
    record = read_provenance(path)
    assert "Generated content" in record["notice"]
    assert record["source"]["name"] == "cells" and record["placement"]["plane_index"] == [3]

    # File > Save Selected Layers with the "FreeDrag TIFF" file type: the plugin's writer
    viewer.layers.selection.active = controller.layers.working
    written = viewer.layers.save(str(tmp_path / "menu.tif"), selected=True, plugin=PLUGIN)
    assert written and "Generated content" in read_provenance(written[0])["notice"]
    assert tifffile.imread(written[0]).dtype == np.uint16
    # ... and a user's layer saved the same way is written as it is
    viewer.layers.selection.active = image
    theirs = viewer.layers.save(str(tmp_path / "cells.tif"), selected=True, plugin=PLUGIN)
    np.testing.assert_array_equal(tifffile.imread(theirs[0]), image.data)


def test_an_rgb_image_stays_rgb(make_napari_viewer):
    from napari_freedrag.napari.api import napari_drag
    from napari_freedrag.napari.runner import controller_for

    viewer = make_napari_viewer()
    rgb = np.random.RandomState(1).randint(0, 255, (SIZE, SIZE, 3)).astype(np.uint8)
    layer = viewer.add_image(rgb, name="photo", rgb=True, scale=(0.25, 0.25))
    before = snapshot([layer])
    result = napari_drag(viewer, model=InvertingAnalytic(SIZE), source=layer,
                         handles=[[20, 20]], targets=[[20, 25]], max_steps=3)  # fmt: skip
    working = controller_for(viewer).layers.working
    assert working.rgb and working.data.shape == (SIZE, SIZE, 3) and working.data.dtype == np.uint8
    assert working.scale.tolist() == [0.25, 0.25]
    assert result.steps >= 1
    assert_same(before, [layer])


def test_a_sample_opens_as_the_working_image_under_the_points(make_napari_viewer, qtbot):
    from napari_freedrag.napari.runner import controller_for

    viewer = make_napari_viewer()
    controller = controller_for(viewer)  # the widget (or the console) is open
    viewer.open_sample("napari-freedrag", "cells")
    qtbot.waitUntil(lambda: len(controller.history) == 1 and not controller.running, timeout=60_000)
    samples = [layer for layer in viewer.layers if "seed" in layer.name]
    assert len(samples) == 3 and controller.is_source(samples[-1])
    np.testing.assert_array_equal(controller.layers.working.data, samples[-1].data)
    assert controller.current_edit.entry["seed"] == samples[-1].metadata["seed"]
    names = [layer.name for layer in viewer.layers]
    assert names[-4:] == [L.NAMES[r] for r in L.OVERLAYS]


@pytest.mark.parametrize("role", [L.HANDLES, L.TARGETS, L.MASK, L.ARROWS, L.WORKING])
def test_deleting_an_owned_layer_mid_run_keeps_the_edit(scene, qtbot, role):
    viewer, controller, (image, *_) = scene
    controller.new_image(InvertingAnalytic(SIZE), source=image, wait=True)
    deleted = []

    def delete_once(step, total):  # the first step shown: the run is under way
        if not deleted:
            deleted.append(step)
            viewer.layers.remove(controller.layers.get(role))

    controller.progress.connect(delete_once)
    controller.run(handles=[[20, 20]], targets=[[20, 30]], mask=None, max_steps=40)
    qtbot.waitUntil(lambda: not controller.running, timeout=60_000)
    assert deleted and len(controller.history) == 2  # the run finished and kept its edit
    for each in (L.HANDLES, L.TARGETS, L.MASK, L.ARROWS, L.WORKING):
        assert controller.layers.get(each) is not None  # re-created for the result
    np.testing.assert_array_equal(
        controller.layers.working.data[0], controller.current_edit.display()
    )


def test_points_placed_by_real_mouse_clicks_drag_the_image(make_napari_viewer, qtbot):
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest

    from napari_freedrag.napari.runner import controller_for

    viewer = make_napari_viewer(show=True)
    controller = controller_for(viewer)
    controller.new_image(InvertingAnalytic(SIZE), wait=True)
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.waitExposed(canvas)
    viewer.reset_view()
    qtbot.wait(50)

    def click(row, col):
        camera = viewer.scene.camera
        zoom, (centre_row, centre_col) = camera.zoom, camera.center[-2:]
        x = canvas.width() / 2 + (col - centre_col) * zoom
        y = canvas.height() / 2 + (row - centre_row) * zoom
        QTest.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(round(x), round(y)))
        qtbot.wait(20)

    click(20, 20)  # on the first blob: a handle
    click(20, 28)  # then its target (the clicks alternate)
    handles = controller.layers.points_in_image(L.HANDLES)
    targets = controller.layers.points_in_image(L.TARGETS)
    np.testing.assert_allclose(handles, [[20, 20]], atol=1.0)
    np.testing.assert_allclose(targets, [[20, 28]], atol=1.0)
    result = controller.run(mask=None, max_steps=60, wait=True)
    assert abs(result.points[0][1] - targets[0][1]) < 3.0


def test_failed_save_paths_raise_one_clear_error(scene, tmp_path):
    from napari_freedrag.errors import InputError

    viewer, controller, (image, *_) = scene
    edit_the_stack(controller, image, steps=1)
    for bad, words in (
        ("/proc/freedrag/edit.tif", "cannot write"),
        (tmp_path / "edit.jpg", ".png or .tif"),
        ("", "choose a file name"),
        (tmp_path / "edit.png", "uint16"),  # PNG would lose a uint16 edit's values
    ):
        with pytest.raises(InputError, match=words):
            controller.save_selected(bad)
    assert list(tmp_path.iterdir()) == []


def test_the_sample_stack_is_edited_in_place_at_the_plane_on_screen(make_napari_viewer, qtbot):
    from napari_freedrag.napari.runner import controller_for

    viewer = make_napari_viewer()
    controller = controller_for(viewer)
    viewer.open_sample("napari-freedrag", "cells_stack")
    (stack,) = [layer for layer in viewer.layers if "z-stack" in layer.name]
    qtbot.waitUntil(lambda: len(controller.history) == 1 and not controller.running, timeout=60_000)
    controller.history.select(0)
    viewer.dims.set_current_step(0, Z_SHOWN)
    step, before = tuple(viewer.dims.current_step), snapshot([stack])
    controller.new_image(source=stack, wait=True)  # the plane on screen, from its own seed
    assert controller.current_edit.entry["seed"] == Z_SHOWN
    working = controller.layers.working
    assert working.data.dtype == np.uint16 and working.data.shape == (1, *stack.data.shape[1:])
    np.testing.assert_allclose(working.data[0], stack.data[Z_SHOWN], atol=1)  # in place
    np.testing.assert_allclose(
        working.data_to_world([0, 5, 7]), stack.data_to_world([Z_SHOWN, 5, 7])
    )
    controller.run(handles=[[30, 30]], targets=[[30, 34]], mask=None, max_steps=2, wait=True)
    assert tuple(viewer.dims.current_step) == step
    assert_same(before, [stack])
