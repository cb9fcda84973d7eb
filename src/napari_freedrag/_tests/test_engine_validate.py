"""One check of a drag instruction, with one rule and one message per mistake, made when
the run is created (before any model work)."""

import numpy as np
import pytest

from napari_freedrag import DragRun, TargetSource, drag_steps
from napari_freedrag._tests.analytic_scene import BLOB_CENTRES
from napari_freedrag.engine.validate import check_instruction
from napari_freedrag.errors import InputError
from napari_freedrag.models.analytic import AnalyticBackend


class CountingBackend(AnalyticBackend):
    """Counts the sessions opened: a refused instruction must open none."""

    sessions = 0

    def session(self, start, mask, method):
        CountingBackend.sessions += 1
        return super().session(start, mask, method)


@pytest.fixture(scope="module")
def gen():
    return CountingBackend()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_steps": True}, "'max_steps' must be an integer"),
        ({"max_steps": "3"}, "'max_steps' must be an integer"),
        ({"preview_every": 1.5}, "'preview_every' must be an integer"),
        ({"lr": "0.1"}, "'lr' must be a number"),
        ({"handles": "16,16"}, "handles must be numbers"),
        ({"handles": [["16", "16"]]}, "handles must be numbers"),
        ({"targets": [[True, False]]}, "targets must be numbers"),
        ({"gen": "cells"}, "gen must be a loaded model"),
        ({"start": None}, "start must be a StartState"),
        ({"method": 3}, "unknown method 3"),
        ({"mask": np.full((64, 64), "x")}, "mask must hold numbers"),
        ({"stop": "yes"}, "stop must be"),
    ],
)
def test_every_argument_of_the_wrong_type_is_named(gen, start, change, message):
    kwargs = {"gen": gen, "start": start, "handles": [[16, 16]], "targets": [[16, 30]], **change}
    before = CountingBackend.sessions
    with pytest.raises(InputError, match=message):
        drag_steps(**kwargs)
    assert CountingBackend.sessions == before


def test_a_start_from_another_model_is_refused_when_the_run_is_created(gen):
    other = AnalyticBackend(name="other-analytic")
    foreign = other.from_centres(BLOB_CENTRES)
    with pytest.raises(InputError, match="made with 'other-analytic', not 'analytic'"):
        drag_steps(gen, foreign, [[16, 16]], [[16, 30]])


@pytest.mark.parametrize("edge", [-0.5, 63.5])
def test_points_on_the_drawn_edge_are_inside_and_clamped(gen, start, edge):
    run = drag_steps(gen, start, [[edge, 20]], [[edge, 30]], max_steps=0)
    assert isinstance(run, DragRun)
    row = 0 if edge < 0 else 63
    np.testing.assert_array_equal(run.instruction.handles, [[row, 20]])
    with pytest.raises(InputError, match="outside the 64x64 image"):
        drag_steps(gen, start, [[edge + np.sign(edge) * 0.01, 20]], [[10, 30]])


def test_faces_can_check_an_instruction_before_loading_a_model():
    handles, targets, mask, overrides = check_instruction(
        (64, 64), [[1, 2]], [[3, 4]], np.ones((64, 64), bool), "draggan", max_steps=5, lr=0.1
    )
    assert handles.shape == targets.shape == (1, 2) and mask is None
    assert overrides == {"max_steps": 5, "lr": 0.1}
    with pytest.raises(InputError, match="unknown parameter 'l' for DragGANParams"):
        check_instruction((64, 64), [[1, 2]], [[3, 4]], method="draggan", l=0.3)


def test_the_run_object_exposes_its_settings_and_result(gen, start):
    run = drag_steps(gen, start, [[16, 16]], [[16, 22]], max_steps=4, lr=0.02)
    assert run.settings.lr == 0.02 and run.settings.max_steps == 4
    with pytest.raises(RuntimeError, match="not ended"):
        _ = run.result
    result = run.run_to_end()
    assert run.result is result and result.steps == 4 and result.params is run.settings
    assert list(run) == []  # iterating an ended run yields nothing more


def test_stop_on_the_run_ends_it_after_the_current_step(gen, start):
    run = drag_steps(gen, start, [[16, 16]], [[16, 40]])
    for step in run:
        if step.index == 2:
            run.stop()
    assert run.result.stopped and run.result.steps == 2


def test_a_target_source_refuses_bad_targets_once_bound(gen, start):
    source = TargetSource([[16, 30]])
    drag_steps(gen, start, [[16, 16]], source, max_steps=3)
    with pytest.raises(InputError, match="target 0 at .row 99"):
        source.set([[99, 3]])
    with pytest.raises(InputError, match="1 handle.*2 target"):
        source.set([[10, 3], [11, 4]])
    version, targets = source.read()  # refused targets change nothing
    assert version == 0
    np.testing.assert_array_equal(targets, [[16, 30]])
