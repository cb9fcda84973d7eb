"""One running drag in the viewer: the worker thread, and what the eye is shown of it.

The engine's steps arrive from a napari ``thread_worker`` in the main thread (Qt queues
them); each arrival only records the step.  Layers are updated at most
:data:`SHOW_HZ` times a second, from a Qt timer in the main thread, so a fast model can
never flood the event loop; the worker stays at most one step ahead of what the main thread
received.  Stop shows the newest step at once, so the kept result is at
most the one step the engine was computing when Stop was pressed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_freedrag.io import jsonable

#: Layer updates per second while a drag runs (what the eye can follow).
SHOW_HZ = 10.0
#: Longest a worker waits for the main thread to take a step (a frozen loop never hangs it).
MAX_LAG_S = 2.0


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
    received: Any = None  # newest Step from the worker
    image: np.ndarray | None = None  # newest preview not yet shown
    shown_step: int = 0
    shown_at: float = 0.0
    timer_pending: bool = False
    finished: bool = False
    acked: int = 0  # the newest step index the main thread received
    delivered: threading.Condition = field(default_factory=threading.Condition)


def guarded_steps(job: Job):
    """The engine's steps, never more than one ahead of what the main thread received.

    Without this the worker runs ahead of Qt's queue on a fast model, and Stop would keep
    steps the user never saw.  An exception becomes a :class:`Failure` return value.
    """
    try:
        for step in job.steps:
            yield step
            index = step.index
            with job.delivered:
                job.delivered.wait_for(lambda i=index: job.acked >= i or job.finished, MAX_LAG_S)
        return job.steps.result
    except Exception as exc:  # noqa: BLE001 - superqt drops worker exceptions: return them
        return Failure(exc)


def acknowledge(job: Job, step) -> None:
    """The main thread has ``step``: let the worker compute the next one."""
    with job.delivered:
        job.acked = step.index
        job.delivered.notify_all()


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


def run_sync(job: Job, on_step, on_result, on_error, end):
    """Run ``job`` in the calling (main) thread; the DragResult, or the engine's error raised."""
    try:
        for step in job.steps:
            on_step(job, step)
        result = job.steps.result
        on_result(job, result)
    except BaseException as exc:
        on_error(job, exc)
        raise
    finally:
        end(job)
    return result


def run_async(job: Job, on_step, on_result, on_error, end):
    """Start ``job`` in a worker thread; callbacks run in the main thread.  The worker."""
    from napari_freedrag.napari.notify import notify_error

    def returned(result):
        if isinstance(result, Failure):
            on_error(job, result.error)
            notify_error(result.error)
        else:
            on_result(job, result)

    worker = make_worker(
        guarded_steps,
        job,
        yielded=lambda step: on_step(job, step),
        returned=returned,
        errored=lambda exc: (on_error(job, exc), notify_error(exc)),
        finished=lambda: end(job),
    )
    worker.start()
    return worker


def make_worker(func, *args, **connect):
    """A napari worker for ``func(*args)`` with callbacks connected, not started yet."""
    from napari.qt.threading import create_worker

    return create_worker(func, *args, _start_thread=False, _connect=connect)


def receive(job: Job, step) -> float:
    """Record a step from the worker; seconds until the display is due (<= 0: now)."""
    job.received = step
    if step.image is not None:
        job.image = step.image
        if job.keep_frames:
            job.frames.append(np.asarray(step.image))
    return job.shown_at + 1.0 / SHOW_HZ - time.perf_counter()


def show_later(job: Job, due: float, show) -> None:
    """Call ``show(job)`` from the Qt event loop in ``due`` seconds (once per wait)."""
    if job.timer_pending:
        return
    from qtpy.QtCore import QTimer

    job.timer_pending = True

    def later():
        job.timer_pending = False
        show(job)

    QTimer.singleShot(max(1, int(due * 1000) + 1), later)


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
            text = "not converged: the points arrived, the content did not"
        text = f"{text} after {result.steps} steps"
    per_step = result.seconds / max(result.steps, 1)
    arrival = result.report.get("content_summary")
    return f"{text} ({per_step:.2f} s/step" + (f", {arrival})" if arrival else ")")
