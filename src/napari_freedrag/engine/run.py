"""The public face of the engine: one :class:`DragRun` per drag, which every face uses.

``drag_steps(...)`` checks the whole instruction (engine/validate.py) and returns a
:class:`DragRun`: iterate it for one :class:`Step` per optimiser step, then read
``run.result``.  ``drag(...)`` runs one to the end.  A run ends one way only: its loop
runs out of steps (converged, budget spent, or stopped).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import DivergedError, InputError
from . import report as reports
from .arrival import arrive_rule, content_points, handle_boxes
from .draggan import run_draggan
from .freedrag import run_freedrag
from .initial import InitialFeatures
from .presets import Params
from .progress import Diverged, Progress
from .protocol import StartState
from .targets import TargetSource
from .validate import Instruction, validate


@dataclass
class Step:
    """One optimiser step. ``points`` are the current carriers, image pixels ``(row, col)``;
    ``targets`` what they are dragged to now (they change when the targets are moved).

    ``decisions`` are the line-search decisions ('A', 'B', 'C'; ``None`` for done points)
    that started the current sub-motion (FreeDrag only).  ``image`` is set when a preview
    is due and at the last step (so is :attr:`content_points`).  ``seconds`` counts from
    the start of the run.
    """

    index: int
    points: np.ndarray
    loss: float
    point_losses: np.ndarray
    decisions: list[str | None] | None
    done: np.ndarray
    image: np.ndarray | None
    seconds: float
    targets: np.ndarray | None = None
    _content: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    @property
    def content_points(self) -> np.ndarray | None:
        """Where the handles' content is (image px) after this step, for the steps with an
        image; measured from this step's latent when first read (nobody may ask).  The
        search window spans the drag: read before the next step, a StyleGAN2 session
        serves it from the map its render kept; later it is a feature pass of its own."""
        return None if self._content is None else self._content()


@dataclass
class DragResult:
    """The outcome of a drag: ``state`` continues the edit, ``report`` is plain JSON.

    ``converged`` means the method's own rule was met *and* the handle's content really
    arrived (``content_points`` within the arrive distance of ``targets``, the final ones).
    """

    state: StartState
    image: np.ndarray
    points: np.ndarray
    handles: np.ndarray
    targets: np.ndarray
    steps: int
    converged: bool
    stopped: bool
    seconds: float
    trace: list[dict[str, Any]] = field(default_factory=list)
    params: Params | None = None
    report: dict[str, Any] = field(default_factory=dict)
    content_points: np.ndarray | None = None


StopFlag = threading.Event | Callable[[], bool] | None


def check_stop(stop: StopFlag) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if hasattr(stop, "is_set"):
        return stop.is_set
    if callable(stop):
        return lambda: bool(stop())
    raise InputError("stop must be a threading.Event or a function returning True to stop")


class DragRun:
    """One checked drag, run step by step.

    Iterate it for :class:`Step` objects (once; iterating again continues where it left
    off), or call :meth:`run_to_end`.  ``result`` is the :class:`DragResult` once it ended,
    ``settings`` the resolved parameters, :meth:`stop` ends it after the step in progress.
    Targets given as a :class:`TargetSource` may be moved while it runs.
    """

    def __init__(self, instruction: Instruction, stop: StopFlag = None):
        self.instruction = instruction
        self._external_stop = check_stop(stop)
        self._stop = threading.Event()
        self._steps: Generator[Step, None, DragResult] | None = None
        self._result: DragResult | None = None
        self._seen_version, self.initial_targets = instruction.targets.read()
        self.current_targets = self.initial_targets.copy()
        #: ``{"after_step": k, "targets": [...]}`` for every change the run took.
        self.target_changes: list[dict[str, Any]] = []
        self._steps_taken = 0

    @property
    def settings(self) -> Params:
        return self.instruction.settings

    @property
    def targets(self) -> TargetSource:
        """Where to :meth:`~TargetSource.set` new targets while the run goes on."""
        return self.instruction.targets

    @property
    def result(self) -> DragResult:
        if self._result is None:
            raise RuntimeError("the run has not ended yet: iterate it or call run_to_end()")
        return self._result

    @property
    def finished(self) -> bool:
        return self._result is not None

    def stop(self) -> None:
        """Ask the run to end before its next optimiser step (any thread)."""
        self._stop.set()

    def __iter__(self) -> Generator[Step, None, DragResult]:
        if self._steps is None:
            self._steps = self._run()
        return self._steps

    def run_to_end(self) -> DragResult:
        for _ in self:
            pass
        return self.result

    # internals ------------------------------------------------------------------------

    def _stop_requested(self) -> bool:
        return self._stop.is_set() or self._external_stop()

    def _retarget(self) -> np.ndarray | None:
        """New targets when the source changed since the last read, else ``None``."""
        version, targets = self.instruction.targets.read()
        if version == self._seen_version:
            return None
        self._seen_version = version
        self.current_targets = targets
        self.target_changes.append({"after_step": self._steps_taken, "targets": targets.tolist()})
        return targets

    def _run(self) -> Generator[Step, None, DragResult]:
        ins = self.instruction
        params = ins.settings
        began = time.perf_counter()
        if params.max_steps == 0:
            start = ins.start
            session = (
                None if start.image is not None else ins.gen.session(start, ins.mask, ins.method)
            )
            image = start.image if session is None else session.render(session.latent.detach())
            return self._end(start, image, ins.handles, [], began, None, False, (1.0, 1.0), None)

        session = ins.gen.session(ins.start, ins.mask, ins.method)
        latent = session.latent
        # the start's features where the run reads them (the whole map with a mask), computed
        # at the loop's first read together with those the arrival measurement will need
        initial = InitialFeatures(session, full=ins.mask is not None)
        initial.want(handle_boxes(session, ins.handles))
        loop_fn = run_freedrag if ins.method == "freedrag" else run_draggan
        loop = loop_fn(session, initial, ins.handles, self.current_targets, params,
                       ins.mask is not None, self._retarget)  # fmt: skip
        trace: list[dict[str, Any]] = []
        last: Progress | None = None
        state = image = None
        measured: Step | None = None  # the last step with an image (and content points)
        stopped = False
        try:
            while True:
                if self._stop_requested():
                    stopped = True
                    break
                progress = next(loop, None)
                if progress is None:
                    break
                last = progress
                index = self._steps_taken = len(trace) + 1
                image = content = None
                if progress.last:
                    state, image = _finish(session, latent)
                elif params.preview_every and index % params.preview_every == 0:
                    image = session.render(latent.detach())
                if image is not None:
                    content = self._content(session, initial, latent)
                entry = {"step": index, "points": progress.points.tolist(), "loss": progress.loss}
                if self.target_changes and self.target_changes[-1]["after_step"] == index - 1:
                    entry["targets"] = progress.targets.tolist()
                trace.append(entry)
                step = Step(index, progress.points, progress.loss, progress.point_losses,
                            progress.decisions, progress.done, image,
                            time.perf_counter() - began, progress.targets, content)  # fmt: skip
                if image is not None:
                    measured = step
                yield step
                if progress.last:  # finished: a stop requested now changes nothing
                    break
        except Diverged as bad:
            kept_state, kept_image = _finish(session, bad.latent)
            kept = trace[: bad.steps]
            content = self._content(session, initial, bad.latent)() if kept else None
            result = self._end(kept_state, kept_image, bad.points, kept, began, None, False,
                               session.feature_scale, content)  # fmt: skip
            error = DivergedError(
                f"the optimisation diverged (loss became NaN or infinite) at step {bad.at_step}; "
                f"kept the state after step {bad.steps}. Try a smaller learning rate (lr) or "
                "shorter drags"
            )
            error.result = result
            raise error from None
        finally:
            loop.close()
        if state is None:
            state, image = _finish(session, latent)
        points = last.points if last is not None else ins.handles
        # a loop that yields nothing found every point done before its first step
        method_done = bool(last.done.all()) if last is not None else not stopped
        content = None
        if trace:  # the latent after the last step, measured with it or measured now
            fresh = measured is not None and measured.index == len(trace)
            content = (
                measured.content_points if fresh else self._content(session, initial, latent)()
            )
        return self._end(state, image, points, trace, began, method_done and not stopped,
                         stopped, session.feature_scale, content)  # fmt: skip

    def _content(self, session, initial, latent) -> Callable[[], np.ndarray]:
        """Where the handles' content is for ``latent`` as it is now, searched around each
        handle far enough to cover every target the run was given so far: measured at the
        first call, kept for the next ones."""
        handles = self.instruction.handles
        seen = [self.initial_targets, *(np.asarray(c["targets"]) for c in self.target_changes)]
        reach = 1.25 * np.max([np.linalg.norm(t - handles, axis=1) for t in seen], axis=0) + 2
        snapshot = latent.detach().clone()
        found: list[np.ndarray] = []

        def measure() -> np.ndarray:
            if not found:
                found.append(content_points(session, initial, snapshot, handles, reach))
            return found[0]

        return measure

    def _end(self, state, image, points, trace, began, method_done, stopped, scale, content):
        """Judge arrival (``content`` None: nothing moved), write the report, keep the result."""
        ins = self.instruction
        handles, targets = ins.handles, self.current_targets
        if content is None:
            content = np.array(handles, dtype=np.float64)
        arrived = arrive_rule(ins.settings).met_in_image(content, targets, scale)
        moved = np.linalg.norm(content - handles, axis=1)
        wanted = np.linalg.norm(targets - handles, axis=1)
        converged = bool(method_done) and bool(arrived.all())
        arrival = {
            "converged": converged,
            "points_arrived": bool(method_done),
            "content_points": content.tolist(),
            "content_moved_px": moved.tolist(),
            "drag_px": wanted.tolist(),
            "content_arrived": arrived.tolist(),
            "content_summary": "content moved "
            + "; ".join(f"{m:.1f} of {w:.1f} px" for m, w in zip(moved, wanted, strict=True)),
        }
        seconds = time.perf_counter() - began
        report = reports.build(self, state.info, points, trace, stopped, seconds, arrival)
        if state is not ins.start:
            state.info = dict(state.info)
            reports.link(state.info, ins.start.info, report)
        self._result = DragResult(
            state, image, np.asarray(points, dtype=np.float64), handles, targets, len(trace),
            converged, stopped, seconds, trace, ins.settings, report, content,
        )  # fmt: skip
        return self._result


def _finish(session, latent: torch.Tensor) -> tuple[StartState, np.ndarray]:
    state = session.finish(latent.detach())
    if state.image is None:
        state.image = session.render(latent.detach())
    return state, state.image


def drag_steps(
    gen, start, handles, targets, mask=None, method="freedrag", *, stop: StopFlag = None, **options
) -> DragRun:
    """Drag ``handles`` to ``targets`` on ``start``: a :class:`DragRun`, checked now.

    ``mask`` (``start.image_size``, 1 = may change) restricts the edit; an empty mask
    means none.  ``targets`` may be a :class:`TargetSource` to move them while it runs.
    ``options`` are checked by :func:`.validate.validate`: ``max_steps``, ``preview_every``
    and overrides of the backend's preset (see ``engine.presets``).  ``stop`` (an Event
    or a callable) is checked before every optimiser step, as is :meth:`DragRun.stop`.
    """
    stop_check = check_stop(stop)
    instruction = validate(gen, start, handles, targets, mask, method, **options)
    return DragRun(instruction, stop_check)


def drag(gen, start, handles, targets, mask=None, method="freedrag", **kw) -> DragResult:
    """Run :func:`drag_steps` to the end and return its :class:`DragResult`.

    Nobody sees its steps, so unless ``preview_every`` is given it renders no previews
    (``preview_every=0``): each would be a full render (a StyleGAN2 render at 512 px costs
    about ten optimisation steps), and the result is always the exact final image.
    """
    if kw.get("preview_every") is None:
        kw["preview_every"] = 0
    return drag_steps(gen, start, handles, targets, mask, method, **kw).run_to_end()


def start_image(gen, start: StartState) -> np.ndarray:
    """The uint8 RGB image of ``start``: its own, or rendered from its latent."""
    if start.image is not None:
        return np.asarray(start.image)
    session = gen.session(start, None, "freedrag")
    return np.asarray(session.render(session.latent.detach()))
