"""Live re-targeting from the widget: the user moves a target while the drag runs.

The analytic backend has known geometry (Gaussian blobs), so "the handle ended near the
new target, not the old one" is a plain distance check.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_freedrag._tests.test_napari_widget import notes  # noqa: F401 (fixture)
from napari_freedrag._tests.test_widget_native import blob, dock, place, step_shown, wait_idle
from napari_freedrag.napari import layers as L

pytestmark = pytest.mark.napari
napari = pytest.importorskip("napari")


def test_moving_a_target_during_a_run_redirects_the_drag(make_napari_viewer, qtbot):
    from napari_freedrag.models.analytic import AnalyticBackend

    w = dock(make_napari_viewer(), AnalyticBackend(size=96, n_blobs=2, sigma=6.0))
    w.new_image()
    wait_idle(qtbot, w)
    handle = blob(w)
    inward = (np.array([47.5, 47.5]) - handle) / np.linalg.norm(np.array([47.5, 47.5]) - handle)
    old = np.round(handle + 20 * inward, 1)
    new = np.round(handle + 20 * (inward + np.array([inward[1], -inward[0]])) / np.sqrt(2), 1)
    if not (new > 8).all() or not (new < 88).all():  # turn the other way, inside the image
        new = np.round(handle + 20 * (inward - np.array([inward[1], -inward[0]])) / np.sqrt(2), 1)
    assert np.linalg.norm(old - new) > 14
    place(w, [handle], [old])
    w.max_steps.value, w.preview_every.value = 1000, 0
    moved = []

    def user_drags_the_target(text):  # once the run is visibly under way
        if step_shown(text) >= 3 and not moved:
            moved.append(text)
            layer = w.controller.layers.get(L.TARGETS)  # as napari's select-mode mouse drag does:
            layer.selected_data = {0}
            layer._move([0], layer.data[0])  # press on the point
            layer._move([0], layer.world_to_data(w.controller.layers.working.data_to_world(new)))
            layer._drag_start = None  # release

    w.controller.status.connect(user_drags_the_target)
    w.run()
    wait_idle(qtbot, w)
    assert moved, "the run ended before the target could be moved"
    final = w.controller.layers.points_in_image(L.HANDLES)[0]
    entry = w.controller.history[-1].entry
    assert np.linalg.norm(final - new) < 3 < np.linalg.norm(final - old) - 8
    np.testing.assert_allclose(entry["final_targets"], [new], atol=0.01)
    assert entry["target_changes"], "the provenance does not say the target moved"
    # the arrow ends at the moved target
    arrow = w.controller.layers.get(L.ARROWS).data[0]
    np.testing.assert_allclose(
        arrow[0] + arrow[1], w.controller.layers.get(L.TARGETS).data[0], atol=0.01
    )
    assert "content moved" in w.status.value


def test_adding_a_target_during_a_run_is_refused_with_one_message(
    make_napari_viewer,
    qtbot,
    notes,  # noqa: F811
):
    from napari_freedrag.models.analytic import AnalyticBackend

    w = dock(make_napari_viewer(), AnalyticBackend(size=96, n_blobs=2, sigma=6.0))
    w.new_image()
    wait_idle(qtbot, w)
    handle = blob(w)
    place(w, [handle], [np.round(handle + 20 * (47.5 - handle) / np.linalg.norm(47.5 - handle), 1)])
    w.max_steps.value, w.preview_every.value = 1000, 0

    def user_adds_a_target(text):
        targets = w.controller.layers.get(L.TARGETS)
        if step_shown(text) >= 3 and len(targets.data) == 1:
            targets.add([[10.0, 10.0]])

    w.controller.status.connect(user_adds_a_target)
    w.run()
    wait_idle(qtbot, w)
    assert len(notes) == 1 and "target" in notes[0]
    assert len(w.controller.history) == 2  # the run went on and kept its edit


def test_the_status_says_not_converged_when_only_the_points_arrived():
    from types import SimpleNamespace

    from napari_freedrag.napari.job import outcome

    report = {"points_arrived": True, "content_summary": "content moved 4.0 of 30.0 px"}
    result = SimpleNamespace(stopped=False, converged=False, steps=80, seconds=4.0, report=report)
    text = outcome(result, shown=80)
    assert text.startswith("not converged: the points arrived, their patches still differ")
    assert "content moved 4.0 of 30.0 px" in text and "0.05 s/step" in text
    arrived = SimpleNamespace(**{**vars(result), "converged": True})
    assert outcome(arrived, shown=80).startswith("converged after 80 steps")
