"""One running drag in the viewer: the worker thread, and what the eye is shown of it.

The worker runs the engine's steps as fast as they come and never waits for the main
thread: each finished step is recorded in the :class:`Job` (under a lock) and replaces the
one before.  A Qt timer in the main thread shows the newest recorded step at most
:data:`SHOW_HZ` times a second, so a fast model can never flood the event loop, and a busy
event loop (a repaint, the user panning) never slows the drag.  Stop shows the newest step
at once; the engine stops before its next step, so the kept result is the step shown or the
one step that was being computed when Stop was pressed.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_freedrag.io import jsonable

#: Layer updates per second while a drag runs, at most (what the eye can follow).
SHOW_HZ = 10.0
#: The share of the main thread that showing a running drag may take: on a machine whose
#: repaints are slow (software OpenGL, a busy CPU) steps are shown less often, so the
#: window stays responsive and the worker's Python is not starved.
DISPLAY_SHARE = 0.25
#: The longest wait between two shown steps, however slow the repaints.
LONGEST_GAP_S = 1.0
#: How often the display timer checks for a new step.
TICK_S = 0.025


@dataclass
class Pace:
    """When the next step may be shown: at most :data:`SHOW_HZ` times a second, and so that
    the time the event loop was busy since the last show (our layer updates, the repaints
    they cause, anything else) is at most :data:`DISPLAY_SHARE` of the gap between shows.
    Busy time is how late the display timer's ticks come."""

    gap_s: float = 1.0 / SHOW_HZ
    busy_s: float = 0.0
    last_tick: float = field(default_factory=time.perf_counter)

    def tick(self, now: float) -> None:
        self.busy_s += max(0.0, now - self.last_tick - TICK_S)
        self.last_tick = now

    def shown(self) -> None:
        self.gap_s = min(LONGEST_GAP_S, max(1.0 / SHOW_HZ, self.busy_s / DISPLAY_SHARE))
        self.busy_s = 0.0


@dataclass
class Failure:
    """An exception handed out of a worker as its return value.

    superqt drops a ``RuntimeError`` raised inside a worker (it takes it for a deleted Qt
    object) without emitting ``errored`` or ``finished``; torch raises RuntimeErrors
    (out of memory among them), so every error travels as a value instead.
    """

    error: Exception


@dataclass
class Job:
    """Everything one Run needs, checked in the main thread before any work starts."""

    parent: int
    edit: Any  # history.Edit the run continues from
    handles: np.ndarray  # model pixels
    targets: np.ndarray
    mask: np.ndarray | None
    method: str
    total: int
    keep_frames: bool
    steps: Any  # the engine's DragRun
    frames: list[np.ndarray] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    latest: Any = None  # newest Step the engine finished
    image: np.ndarray | None = None  # newest preview not yet shown
    shown_step: int = 0
    shown_at: float = 0.0
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    timer: Any = None  # the main thread's display timer of an asynchronous run
    pace: Pace = field(default_factory=Pace)


def record(job: Job, step) -> None:
    """Keep ``step`` as the newest one (any thread); previews are kept for the movie."""
    with job.lock:
        job.latest = step
        if step.image is not None:
            job.image = step.image
            if job.keep_frames:
                job.frames.append(np.asarray(step.image))


def take(job: Job):
    """The newest step and the preview not yet shown (``None`` when shown already)."""
    with job.lock:
        step, image = job.latest, job.image
        job.image = None
    return step, image


def display_due(job: Job) -> bool:
    """Whether a newer step than the one on screen waits and the display rate allows it."""
    latest = job.latest
    fresh = latest is not None and latest.index > job.shown_step
    return fresh and time.perf_counter() - job.shown_at >= job.pace.gap_s


def compute_steps(job: Job):
    """The worker: every step of the engine recorded; the DragResult, or a :class:`Failure`."""
    try:
        for step in job.steps:
            record(job, step)
        return job.steps.result
    except Exception as exc:  # noqa: BLE001 - superqt drops worker exceptions: return them
        return Failure(exc)


def guarded_yields(func):
    """What the generator ``func()`` yields; its return value, or an exception returned
    as a :class:`Failure` (see there)."""
    try:
        return (yield from func())
    except Exception as exc:  # noqa: BLE001 - superqt drops worker exceptions: return them
        return Failure(exc)


def drain(steps, on_yield):
    """Run the generator ``steps`` here, ``on_yield`` for each value; its return value."""
    while True:
        try:
            value = next(steps)
        except StopIteration as end:
            return end.value
        on_yield(value)


def run_sync(job: Job, show, on_result, on_error, end):
    """Run ``job`` in the calling (main) thread, showing steps at the display rate; the
    DragResult, or the engine's error raised."""
    try:
        for step in job.steps:
            record(job, step)
            if display_due(job):
                show(job)
                process_events()
        result = job.steps.result
        on_result(job, result)
    except BaseException as exc:
        on_error(job, exc)
        raise
    finally:
        end(job)
    return result


def pause_garbage_collection():
    """Hold Python's cyclic garbage collector off while a drag runs; the function that
    restores it.  With napari's millions of objects a full collection stops every thread
    for 0.1-0.3 s, a visible freeze of the running preview; a drag's own garbage is freed
    by reference counting, and the collector runs again when the drag has ended."""
    was_enabled = gc.isenabled()
    gc.disable()
    return gc.enable if was_enabled else (lambda: None)


def run_async(job: Job, show, on_result, on_error, end):
    """Start ``job`` in a worker thread; ``show`` runs from a main-thread timer, the other
    callbacks in the main thread when the worker ends.  The worker."""
    from qtpy.QtCore import QTimer

    from napari_freedrag.napari.notify import notify_error

    def returned(result):
        if isinstance(result, Failure):
            on_error(job, result.error)
            notify_error(result.error)
        else:
            on_result(job, result)

    def finished():
        job.timer.stop()
        restore_gc()
        end(job)

    def tick():
        job.pace.tick(time.perf_counter())
        if not job.finished and display_due(job):
            show(job)
            job.pace.shown()

    job.timer = QTimer()
    job.timer.setInterval(int(TICK_S * 1000))
    job.timer.timeout.connect(tick)
    worker = make_worker(
        compute_steps,
        job,
        returned=returned,
        errored=lambda exc: (on_error(job, exc), notify_error(exc)),
        finished=finished,
    )
    restore_gc = pause_garbage_collection()
    job.timer.start()
    worker.start()
    return worker


def make_worker(func, *args, **connect):
    """A napari worker for ``func(*args)`` with callbacks connected, not started yet."""
    from napari.qt.threading import create_worker

    return create_worker(func, *args, _start_thread=False, _connect=connect)


def process_events() -> None:
    """Let a viewer repaint during a synchronous run (called at the display rate)."""
    from qtpy.QtWidgets import QApplication

    if QApplication.instance() is not None:
        QApplication.processEvents()


def edit_entry(job: Job, result) -> dict[str, Any]:
    """JSON-able provenance of one finished edit (what Save writes into the file)."""
    report = jsonable(dict(getattr(result, "report", None) or {}))
    mask_pixels = None if job.mask is None else int(np.count_nonzero(job.mask))
    parent = job.edit.entry
    return {
        **report,
        "generated": True,
        "model": report.get("model", job.edit.backend.name),
        "method": job.method,
        "seed": parent.get("seed"),
        "source": parent.get("source"),
        "placement": parent.get("placement"),
        "steps": int(result.steps),
        "converged": bool(result.converged),
        "stopped": bool(result.stopped),
        "parameters": report.get("parameters", jsonable(getattr(result, "params", {}))),
        "instruction": {
            "handles": job.handles.tolist(),
            "targets": job.targets.tolist(),
            "final_points": np.asarray(result.points).tolist(),
            "mask": "none" if mask_pixels is None else f"{mask_pixels} editable pixels",
            "continued_from_edit": job.parent,
        },
    }


def outcome(result, shown: int) -> str:
    """How a finished run ended, for the status line: converged, stopped or not, and how
    far the content (not just the points) moved."""
    if result.stopped:
        text = f"stopped: kept step {result.steps} (last shown: step {shown})"
    else:
        text = "converged" if result.converged else "max steps reached"
        if not result.converged and result.report.get("points_arrived"):
            # FreeDrag's test is the patch, not the distance: say what failed, and let the
            # measured content movement below say how far the content really went
            text = "not converged: the points arrived, their patches still differ from the start's"
        text = f"{text} after {result.steps} steps"
    per_step = result.seconds / max(result.steps, 1)
    arrival = result.report.get("content_summary")
    return f"{text} ({per_step:.2f} s/step" + (f", {arrival})" if arrival else ")")
