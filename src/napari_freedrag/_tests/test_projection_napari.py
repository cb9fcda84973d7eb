"""The widget with a StyleGAN2 model and a user's image: project, show PSNR/SSIM, drag on."""

from __future__ import annotations

import numpy as np
import pytest

from napari_freedrag.napari import layers as L

from .test_napari_widget import tiny_backend, wait_run

pytestmark = pytest.mark.napari
napari = pytest.importorskip("napari")


@pytest.fixture
def docked(make_napari_viewer):
    from napari_freedrag.napari.widget import FreeDragWidget

    viewer = make_napari_viewer()
    rows, cols = np.mgrid[0:40, 0:40]
    data = (1000 + 40 * rows + 30 * cols + 800 * np.sin(cols / 4)).astype(np.uint16)
    layer = viewer.add_image(data, name="cells", scale=(0.5, 0.5), contrast_limits=(0, 4000))
    w = FreeDragWidget(viewer, backend=tiny_backend())
    viewer.window.add_dock_widget(w)
    w.source.value = layer
    return w, layer, data.copy()


def test_a_users_layer_is_projected_then_dragged_and_never_touched(docked, qtbot):
    w, layer, original = docked
    wait_run(qtbot, w, w.new_image())
    edits = w.viewer.layers[L.EDITS]
    record = edits.metadata["edits"][0]["info"]["projection"]
    assert record["steps"] == 200 and not record["stopped"]
    assert record["conversion"]["resize"] == [[40, 40], [32, 32]]
    assert f"PSNR {record['psnr']:.1f} dB" in w.status.value
    assert edits.scale[-2:].tolist() == pytest.approx([0.625, 0.625])  # covers the source
    w.viewer.layers[L.HANDLES].add([[12.0, 12.0]])
    w.viewer.layers[L.TARGETS].add([[12.0, 16.0]])
    w.max_steps.value = 2
    wait_run(qtbot, w, w.run())
    assert edits.data.shape[0] == 2 and edits.metadata["edits"][1]["steps"] == 2
    np.testing.assert_array_equal(layer.data, original)


def test_stop_during_the_projection_keeps_the_state_reached(docked, qtbot):
    w, _, _ = docked
    worker = w.new_image()
    w.controller.stop()
    wait_run(qtbot, w, worker)
    record = w.viewer.layers[L.EDITS].metadata["edits"][0]["info"]["projection"]
    assert record["stopped"] and record["steps"] < 200
