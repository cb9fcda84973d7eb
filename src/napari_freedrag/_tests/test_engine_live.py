"""Targets moved while a run goes on, and the honest measure of where the content went,
on the analytic backend (blob centres are ground truth)."""

import threading

import numpy as np
import pytest

from napari_freedrag import TargetSource
from napari_freedrag.engine.run import drag, drag_steps

METHODS = ["freedrag", "draggan"]


@pytest.mark.parametrize("method", METHODS)
def test_a_target_moved_during_the_run_is_where_the_handle_ends(gen, start, method):
    old, new = [16.0, 30.0], [28.0, 18.0]
    source = TargetSource([old])
    run = drag_steps(gen, start, [[16, 16]], source, method=method)
    steps = []
    for step in run:
        steps.append(step)
        if step.index == 6:
            source.set([new])  # as the widget does from the targets layer's events
    result = run.result
    blob = gen.centres(result.state.latent).numpy()[0]
    assert np.linalg.norm(blob - new) < 2.5 and np.linalg.norm(blob - old) > 8
    np.testing.assert_array_equal(result.targets, [new])
    (change,) = result.report["target_changes"]
    taken = change["after_step"]  # DragGAN: its next step; FreeDrag: its next sub-motion
    assert change["targets"] == [new]
    assert taken == 6 if method == "draggan" else 6 <= taken < 6 + run.settings.inner_steps
    assert result.report["targets"] == [old] and result.report["final_targets"] == [new]
    np.testing.assert_array_equal(steps[taken - 1].targets, [old])
    np.testing.assert_array_equal(steps[taken].targets, [new])
    assert result.trace[taken]["targets"] == [new] and "targets" not in result.trace[taken - 1]
    assert result.report["points_arrived"]


def test_targets_can_move_from_another_thread(gen, start):
    source = TargetSource([[16, 30]])
    run = drag_steps(gen, start, [[16, 16]], source, method="draggan")
    moved = threading.Event()
    for step in run:
        if step.index == 4 and not moved.is_set():
            worker = threading.Thread(target=source.set, args=([[26, 16]],))
            worker.start()
            worker.join()
            moved.set()
    assert run.result.report["target_changes"][0]["after_step"] == 4
    assert np.linalg.norm(gen.centres(run.result.state.latent).numpy()[0] - [26, 16]) < 2.5


def test_a_moved_target_wakes_a_point_that_was_done(gen, start):
    source = TargetSource([[16, 28], [48, 44]])  # the second handle sits on its target
    run = drag_steps(gen, start, [[16, 16], [48, 44]], source)
    for step in run:
        if step.index == 3:
            assert step.done.tolist() == [False, True]
            source.set([[16, 28], [48, 36]])
    blobs = gen.centres(run.result.state.latent).numpy()
    assert np.linalg.norm(blobs[1] - [48, 36]) < 2.5


@pytest.mark.parametrize("method", METHODS)
def test_content_points_follow_the_blob(gen, start, method):
    run = drag_steps(gen, start, [[16, 16], [48, 44]], [[26, 16], [48, 34]], method=method)
    steps = list(run)
    result = run.result
    blobs = gen.centres(result.state.latent).numpy()[:2]
    previews = [s for s in steps if s.image is not None]
    assert all((s.content_points is None) == (s.image is None) for s in steps)
    np.testing.assert_array_equal(previews[-1].content_points, result.content_points)
    assert np.linalg.norm(previews[0].content_points - [[16, 16], [48, 44]], axis=1).max() < 6
    np.testing.assert_allclose(result.content_points, blobs, atol=0.6)
    moved = np.linalg.norm(blobs - [[16, 16], [48, 44]], axis=1)
    np.testing.assert_allclose(result.report["content_moved_px"], moved, atol=0.6)
    assert result.report["drag_px"] == [10.0, 10.0]
    assert result.report["content_summary"].startswith("content moved ")


def test_a_handle_on_the_background_is_not_called_converged(gen, start):
    # (30, 30) is background between the blobs: FreeDrag's carrier "arrives" at once
    result = drag(gen, start, [[30, 30]], [[30, 40]], method="freedrag")
    assert result.report["points_arrived"] and result.steps < 20
    assert not result.converged and result.report["content_arrived"] == [False]
    assert result.report["content_moved_px"][0] < 5


def test_converged_means_the_content_arrived(gen, start):
    # a short drag the blob follows exactly, and one where it overshoots the 1 px rule
    for target in ([[16, 22]], [[16, 30]]):
        result = drag(gen, start, [[16, 16]], target, method="freedrag")
        content_left = np.linalg.norm(result.content_points[0] - target[0])
        assert result.report["points_arrived"]
        assert result.converged == (content_left < 1.0)
