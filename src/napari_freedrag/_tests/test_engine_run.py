"""The engine end to end on the analytic backend, whose blob centres are ground truth."""

import json
import threading
from dataclasses import fields

import numpy as np
import pytest
import torch

from napari_freedrag import TargetSource
from napari_freedrag._tests.analytic_scene import BLOB_CENTRES
from napari_freedrag.engine.presets import DragGANParams, FreeDragParams
from napari_freedrag.engine.run import drag, drag_steps
from napari_freedrag.errors import DivergedError, InputError
from napari_freedrag.models.analytic import AnalyticBackend, AnalyticSession

METHODS = ["freedrag", "draggan"]


def blobs(gen, result):
    return gen.centres(result.state.latent).numpy()


def rule_met(result):
    """The method's own stop rule was met (carriers / tracked points arrived)."""
    return result.report["points_arrived"]


def run_all(gen, start, *args, **kw):
    run = drag_steps(gen, start, *args, **kw)
    steps = list(run)
    return steps, run.result


@pytest.mark.parametrize("method", METHODS)
def test_a_blob_arrives_at_its_target(gen, start, method):
    result = drag(gen, start, [[16, 16]], [[16, 30]], method=method)
    assert rule_met(result) and not result.stopped
    assert 0 < result.steps < 150
    # the carrier meets the method's own stop rule; the blob itself lands close by
    reach = 1.0 if method == "freedrag" else 2.0
    assert np.linalg.norm(result.points[0] - [16, 30]) <= reach
    assert np.linalg.norm(blobs(gen, result)[0] - [16, 30]) < 2.0
    assert np.linalg.norm(gen.centres(start.latent).numpy()[0] - [16, 30]) == 14


@pytest.mark.parametrize("method", METHODS)
def test_two_points_move_together(gen, start, method):
    result = drag(gen, start, [[16, 16], [48, 44]], [[26, 16], [48, 34]], method=method)
    assert rule_met(result)
    moved = blobs(gen, result)[:2]
    assert np.linalg.norm(moved - [[26, 16], [48, 34]], axis=1).max() < 2.5


@pytest.mark.parametrize("method", METHODS)
def test_many_points_move_three_blobs_at_once(gen, start, method):
    layout = np.array(BLOB_CENTRES, dtype=float)
    shift = np.array([[6, 4], [-6, -4], [6, -4]], dtype=float)
    handles = np.concatenate([layout, layout + [0, 3]])  # centre and flank of each blob
    targets = handles + np.concatenate([shift, shift])
    result = drag(gen, start, handles, targets, method=method)
    assert rule_met(result) and result.points.shape == (6, 2)
    assert np.linalg.norm(blobs(gen, result) - (layout + shift), axis=1).max() < 3.0


@pytest.mark.parametrize("method", METHODS)
def test_points_on_the_border_are_clamped_and_dragged_along_it(gen, method):
    start = gen.from_centres([[4, 20], [48, 44], [30, 10]])
    # both points lie on the image's top edge (row -0.5 .. 0.5), off the pixel grid
    result = drag(gen, start, [[-0.3, 20]], [[-0.4, 34]], method=method)
    np.testing.assert_array_equal(result.handles, [[0, 20]])
    np.testing.assert_array_equal(result.targets, [[0, 34]])
    assert rule_met(result)
    shift = blobs(gen, result)[0] - [4, 20]
    assert abs(shift[0]) < 1.0 and abs(shift[1] - 14) < 3.0


def test_a_done_point_holds_its_content_while_another_moves(gen, start):
    steps, result = run_all(gen, start, [[16, 16], [48, 44]], [[16, 28], [48, 44]])
    assert steps[0].done.tolist() == [False, True]
    assert all(step.decisions[1] is None for step in steps)
    np.testing.assert_array_equal(result.points[1], [48, 44])
    moved = np.linalg.norm(blobs(gen, result) - np.array(BLOB_CENTRES), axis=1)
    assert moved[0] > 10 and moved[1] < 1.0


@pytest.mark.parametrize("method", METHODS)
def test_the_mask_keeps_content_outside_it(gen, start, method):
    mask = np.zeros((64, 64))
    mask[4:29, 4:41] = 1
    free = drag(gen, start, [[16, 16]], [[16, 30]], method=method)
    held = drag(gen, start, [[16, 16]], [[16, 30]], mask=mask, method=method)
    assert rule_met(held)
    others_free = np.linalg.norm(blobs(gen, free)[1:] - BLOB_CENTRES[1:], axis=1).max()
    others_held = np.linalg.norm(blobs(gen, held)[1:] - BLOB_CENTRES[1:], axis=1).max()
    assert others_free > 3.0 and others_held < others_free / 3
    change = np.abs(held.image.astype(float) - start.image.astype(float)).mean(axis=-1)
    assert change[mask == 0].mean() < change[mask == 1].mean() / 5


def test_an_empty_or_full_mask_is_no_mask(gen, start):
    plain = drag(gen, start, [[16, 16]], [[16, 24]], max_steps=12)
    empty = drag(gen, start, [[16, 16]], [[16, 24]], mask=np.zeros((64, 64)), max_steps=12)
    full = drag(gen, start, [[16, 16]], [[16, 24]], mask=np.ones((64, 64), bool), max_steps=12)
    assert plain.trace == empty.trace == full.trace


def record_renders(session) -> list:
    """The latents ``session.render`` is called with from now on (a list that grows)."""
    renders, render = [], session.render

    def render_spy(latent):
        renders.append(latent)
        return render(latent)

    session.render = render_spy
    return renders


class SpyBackend(AnalyticBackend):
    """Records the boxes of every feature read (with ``strict_boxes``: fills the rest with
    NaN) and every render."""

    def session(self, start, mask, method):
        session = super().session(start, mask, method)
        calls, latents = self.calls, self.latents = [], []
        self.grad_enabled = grad_enabled = []
        read = session.features

        def features(latent, boxes=None):
            calls.append(boxes)
            grad_enabled.append(torch.is_grad_enabled())
            latents.append(latent)
            return read(latent, boxes)

        session.features = features
        self.renders = record_renders(session)
        return session


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "handles, targets",
    [
        ([[16, 16]], [[16, 30]]),
        ([[16, 16], [48, 44]], [[26, 16], [48, 34]]),
        ([[1, 48]], [[0, 63]]),
    ],
)
def test_announced_boxes_cover_every_read(gen, start, method, handles, targets):
    spy = SpyBackend(strict_boxes=True)
    exact = drag(gen, start, handles, targets, method=method, max_steps=40)
    boxed = drag(spy, start, handles, targets, method=method, max_steps=40)
    assert boxed.trace == exact.trace
    np.testing.assert_array_equal(boxed.content_points, exact.content_points)
    # not even the start's features are read as a whole map: its boxes come in one call
    assert spy.latents[0] is not spy.latents[1] and torch.equal(spy.latents[0], start.latent)
    assert all(boxes is not None for boxes in spy.calls)
    assert all(r1 - r0 < 32 or c1 - c0 < 32 for boxes in spy.calls for r0, c0, r1, c1 in boxes)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("after", [0, 3, 7])
def test_boxes_follow_targets_moved_during_the_run(gen, start, method, after):
    """Targets moved before the first step (FreeDrag's first line search reads the start's
    features towards them) or mid-run: every read stays inside announced boxes."""

    def run(backend):
        source = TargetSource([[16, 30]])
        steps = drag_steps(backend, start, [[16, 16]], source, method=method, max_steps=30)
        if after == 0:
            source.set([[30, 16]])
        for step in steps:
            if step.index == after:
                source.set([[30, 16]])
        return steps.result

    exact, boxed = run(gen), run(SpyBackend(strict_boxes=True))
    assert boxed.trace == exact.trace and boxed.report["target_changes"]
    np.testing.assert_array_equal(boxed.content_points, exact.content_points)


@pytest.mark.parametrize("method", METHODS)
def test_a_mask_term_reads_the_full_map(gen, start, method):
    """Every read a step's gradient flows from is the whole map (the mask term needs it);
    FreeDrag's line searches need no gradient and read boxes, to the same trace."""
    mask = np.zeros((64, 64))
    mask[:32] = 1

    def run(backend):
        return drag(backend, start, [[16, 16]], [[16, 30]], mask=mask, method=method,
                    max_steps=12, preview_every=0)  # fmt: skip

    exact, spy = run(gen), SpyBackend(strict_boxes=True)
    boxed = run(spy)
    assert boxed.trace == exact.trace
    reads = list(zip(spy.calls, spy.grad_enabled, strict=True))
    *optimising, measuring = reads  # the last read measures where the content went
    assert all(boxes is None for boxes, grad in optimising if grad)
    assert any(boxes is not None for boxes, grad in optimising) == (method == "freedrag")
    assert measuring[0] is not None


@pytest.mark.parametrize("method", METHODS)
def test_boxes_return_when_the_backend_finds_nothing_to_preserve(start, method):
    spy = SpyBackend()
    mask = np.ones((64, 64))
    mask[40, 40] = 0  # vanishes at feature resolution: the session has no mask term
    drag(spy, start, [[16, 16]], [[16, 24]], mask=mask, max_steps=6, method=method)
    assert spy.calls[1] is None and all(boxes is not None for boxes in spy.calls[2:])


def test_freedrag_points_stay_on_the_line_to_their_target(gen, start):
    handle, target = np.array([16.0, 16.0]), np.array([26.0, 30.0])
    steps, _ = run_all(gen, start, [handle], [target])
    direction = (target - handle) / np.linalg.norm(target - handle)
    decisions = {step.decisions[0] for step in steps if step.decisions[0]}
    assert decisions <= {"A", "B", "C"} and steps[0].decisions == ["A"]
    for step in steps:
        offset = step.points[0] - handle
        assert abs(offset[0] * direction[1] - offset[1] * direction[0]) < 1e-6
        assert offset @ direction <= np.linalg.norm(target - handle) + 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_runs_are_deterministic(gen, start, method):
    first = drag(gen, start, [[16, 16], [48, 44]], [[22, 26], [40, 44]], method=method)
    second = drag(gen, start, [[16, 16], [48, 44]], [[22, 26], [40, 44]], method=method)
    assert first.trace == second.trace
    assert torch.equal(first.state.latent, second.state.latent)


@pytest.mark.parametrize("method", METHODS)
def test_stop_keeps_the_state_of_the_last_finished_step(gen, start, method):
    flag = threading.Event()
    steps = []
    run = drag_steps(gen, start, [[16, 16]], [[16, 40]], method=method, stop=flag)
    for step in run:
        steps.append(step)
        if step.index == 3:
            flag.set()
    result = run.result
    assert [s.index for s in steps] == [1, 2, 3]
    assert result.stopped and not result.converged and result.steps == 3
    np.testing.assert_array_equal(result.points, steps[-1].points)
    three = drag(gen, start, [[16, 16]], [[16, 40]], method=method, max_steps=3)
    assert torch.equal(result.state.latent, three.state.latent)
    assert result.report["stopped"] is True and len(result.report["trace"]) == 3


def test_a_stop_after_the_last_step_keeps_the_converged_result(gen, start):
    flag = threading.Event()
    run = drag_steps(gen, start, [[16, 16]], [[16, 22]], stop=flag)
    for step in run:
        if step.image is not None and step.done.all():
            flag.set()  # the user presses Stop just as the run finishes
    result = run.result
    assert rule_met(result) and not result.stopped and result.steps == step.index


def test_stop_accepts_a_callable_and_closing_the_generator_is_clean(gen, start):
    calls = []
    result = drag(
        gen, start, [[16, 16]], [[16, 40]], stop=lambda: len(calls.append(1) or calls) > 5
    )
    assert result.stopped and result.steps == 5
    run = drag_steps(gen, start, [[16, 16]], [[16, 40]])
    next(iter(run))
    iter(run).close()


def test_previews_come_every_n_steps_and_at_the_last(gen, start):
    steps, result = run_all(gen, start, [[16, 16]], [[16, 40]], max_steps=10, preview_every=4)
    with_image = [s.index for s in steps if s.image is not None]
    assert with_image == [4, 8, 10]
    np.testing.assert_array_equal(steps[-1].image, result.image)
    assert steps[-1].image.shape == (64, 64, 3) and steps[-1].image.dtype == np.uint8


def test_drag_renders_no_preview_unless_asked(start):
    """Nobody sees drag()'s steps: its only image is the final one (rendered by finish)."""
    spy = SpyBackend()
    quiet = drag(spy, start, [[16, 16]], [[16, 40]], max_steps=10)
    assert spy.renders == [] and quiet.report["parameters"]["preview_every"] == 0
    shown = drag(spy, start, [[16, 16]], [[16, 40]], max_steps=10, preview_every=4)
    assert len(spy.renders) == 2  # steps 4 and 8; step 10 is the final image
    assert shown.trace == quiet.trace
    np.testing.assert_array_equal(shown.image, quiet.image)


def test_a_preview_measures_its_content_only_when_read(gen, start):
    """The content search costs a feature pass: a preview's runs when someone reads it,
    from that step's latent, however late."""
    spy = SpyBackend()
    steps = list(drag_steps(spy, start, [[16, 16]], [[16, 40]], max_steps=10, preview_every=4))
    assert [s.index for s in steps if s.image is not None] == [4, 8, 10]
    reads = len(spy.calls)
    late = steps[3].content_points  # read after the run ended
    assert len(spy.calls) == reads + 1 and steps[3].content_points is late
    assert steps[4].content_points is None
    at_once = [s.content_points for s in drag_steps(gen, start, [[16, 16]], [[16, 40]],
               max_steps=10, preview_every=4) if s.image is not None]  # fmt: skip
    np.testing.assert_array_equal(late, at_once[0])
    assert not np.array_equal(at_once[0], at_once[1])


def test_zero_steps_returns_the_start_image(gen, start):
    steps, result = run_all(gen, start, [[16, 16]], [[16, 30]], max_steps=0)
    assert steps == [] and result.steps == 0
    assert result.image is start.image and result.state is start


def test_a_handle_on_its_target_is_done_at_once(gen, start):
    steps, result = run_all(gen, start, [[16, 16]], [[16, 16]])
    assert steps == [] and result.converged and result.steps == 0
    np.testing.assert_array_equal(result.image, start.image)


class PoisonedBackend(AnalyticBackend):
    """Features turn NaN from the ``bad_from``-th gradient step on."""

    def __init__(self, bad_from):
        super().__init__()
        self.bad_from = bad_from

    def session(self, start, mask, method):
        session = AnalyticSession(self, start, mask, method)
        read, count = session.features, [0]

        def features(latent, boxes=None):
            out = read(latent, boxes)
            if torch.is_grad_enabled():
                count[0] += 1
                if count[0] >= self.bad_from:
                    return out * float("nan")
            return out

        session.features = features
        self.renders = record_renders(session)
        return session


@pytest.mark.parametrize("method", METHODS)
def test_nan_stops_with_a_clear_error_and_keeps_the_last_good_state(gen, start, method):
    seen = []
    with pytest.raises(DivergedError, match="diverged.*step 7.*learning rate") as caught:
        for step in drag_steps(PoisonedBackend(7), start, [[16, 16]], [[16, 40]], method=method):
            seen.append(step.index)
    assert seen == list(range(1, 7))
    good = caught.value.result
    assert good.steps == 5 and len(good.trace) == 5
    five = drag(gen, start, [[16, 16]], [[16, 40]], method=method, max_steps=5)
    assert torch.equal(good.state.latent, five.state.latent)
    np.testing.assert_array_equal(good.image, five.image)


def test_the_report_has_every_field_and_is_plain_json(gen):
    start = gen.sample(seed=3)
    result = drag(gen, start, [[30, 30]], [[30, 36]], max_steps=20)
    report = json.loads(json.dumps(result.report))
    for key in ("model", "method", "seed", "image_size", "handles", "targets", "final_points",
                "steps", "converged", "stopped", "seconds", "seconds_per_step", "device",
                "parameters", "versions", "trace"):  # fmt: skip
        assert key in report
    assert (
        report["seed"] == 3 and report["model"] == "analytic" and report["image_size"] == [64, 64]
    )
    assert set(report["parameters"]) == {f.name for f in fields(FreeDragParams)}
    assert set(report["versions"]) == {"napari_freedrag", "torch", "numpy", "python"}
    assert len(report["trace"]) == report["steps"] == result.steps
    assert set(report["trace"][0]) == {"step", "points", "loss"}
    assert report["final_points"] == result.points.tolist()


def test_overrides_reach_the_run(gen, start):
    result = drag(gen, start, [[16, 16]], [[16, 30]], method="draggan", lr=0.002, max_steps=7)
    assert isinstance(result.params, DragGANParams)
    assert result.params.lr == 0.002 and result.steps == 7
    assert result.report["parameters"]["lr"] == 0.002


@pytest.mark.parametrize(
    "handles, targets, kwargs, message",
    [
        ([[1, 1], [2, 2]], [[3, 3]], {}, "2 handle.*1 target"),
        (np.zeros((0, 2)), np.zeros((0, 2)), {}, "no handle points"),
        ([[np.nan, 1]], [[3, 3]], {}, "handle 0 is not a finite"),
        ([[10, 10], [70, 3]], [[3, 3], [4, 4]], {}, r"handle 1 at \(row 70, col 3\).*64x64"),
        ([[10, 10]], [[3, -2]], {}, "target 0.*outside"),
        ([[1, 2, 3]], [[3, 3]], {}, r"\(N, 2\)"),
        ([[1, 1]], [[3, 3]], {"method": "dragon"}, "unknown method 'dragon'"),
        ([[1, 1]], [[3, 3]], {"mask": np.ones((32, 32))}, r"mask shape \(32, 32\).*\(64, 64\)"),
        ([[1, 1]], [[3, 3]], {"mask": np.full((64, 64), 2.0)}, "0 .keep. .. 1"),
        ([[1, 1]], [[3, 3]], {"gamma": 1}, "unknown parameter 'gamma'.*allowed"),
        ([[1, 1]], [[3, 3]], {"l": -1}, r"'l' must be a number in \[1e-06, 100.0\]"),
        ([[1, 1]], [[3, 3]], {"max_steps": 2.5}, "'max_steps' must be an integer"),
        ([[1, 1]], [[3, 3]], {"patch_units": "cm"}, "'patch_units' must be 'image' or 'feature'"),
        ([[1, 1]], [[3, 3]], {"stop": 3}, "stop must be"),
    ],
)
def test_bad_input_is_refused_before_any_work(gen, start, handles, targets, kwargs, message):
    with pytest.raises(InputError, match=message):
        drag_steps(gen, start, handles, targets, **kwargs)


def test_label_masks_count_every_nonzero_label_as_editable():
    from napari_freedrag.engine.validate import check_mask as _check_mask

    labels = np.zeros((4, 5), dtype=np.uint8)
    labels[1, 1], labels[2, 3] = 1, 255
    mask = _check_mask(labels, (4, 5))
    assert mask.sum() == 2 and mask[2, 3] == 1.0
