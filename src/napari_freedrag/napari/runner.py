"""The controller behind the dock widget and ``napari_drag``: one place that runs edits.

Work runs in a napari ``thread_worker`` over the engine's step generator; layers are
touched only in the ``yielded`` / ``returned`` / ``errored`` callbacks, which napari
delivers in the main thread.  Scripts can ask for a synchronous run (``wait=True``) that
calls the same callbacks in the caller's thread, so both paths change the same layers in
the same way.

A failed run (bad input, a model error, a crash in the worker) leaves every layer as it
was before Run: input is checked before the worker starts, and the live preview is rolled
back if the worker fails.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psygnal import Signal

from napari_freedrag.errors import FreeDragError, InputError, ModelError
from napari_freedrag.io import jsonable
from napari_freedrag.napari import layers as L

log = logging.getLogger(__name__)

#: Seconds between progress-bar updates (each one makes napari process pending Qt events).
PROGRESS_INTERVAL_S = 0.2
#: A mask argument meaning "read the painted ``mask`` layer".
FROM_LAYER = "layer"


@dataclass
class _Job:
    """Everything one Run needs, checked in the main thread before any work starts."""

    record: L.EditRecord
    parent: int
    handles: np.ndarray
    targets: np.ndarray
    mask: np.ndarray | None
    method: str
    max_steps: int | None
    preview_every: int | None
    params: dict[str, Any]
    keep_frames: bool
    steps: Any = None  # the engine's step generator
    frames: list[np.ndarray] = field(default_factory=list)
    started: float = 0.0
    snapshot: dict[str, Any] = field(default_factory=dict)
    progress: Any = None
    shown_step: int = 0
    bar_updated: float = 0.0
    finished: bool = False


_CONTROLLERS: weakref.WeakKeyDictionary[Any, DragController] = weakref.WeakKeyDictionary()


def unwrap_viewer(viewer):
    """The real viewer behind the ``PublicOnlyProxy`` napari hands plugin widgets.

    Layers reached through the proxy are new proxy objects each time, so anything keyed
    by layer identity (the edit records) must work on the real viewer.
    """
    return getattr(viewer, "__wrapped__", viewer)


def controller_for(viewer) -> DragController:
    """The one controller of ``viewer``, shared by its widget(s) and ``napari_drag``.

    One per viewer means a reopened widget finds the running drag and the loaded models,
    and no second set of event connections piles up.
    """
    viewer = unwrap_viewer(viewer)
    controller = _CONTROLLERS.get(viewer)
    if controller is None:
        controller = _CONTROLLERS[viewer] = DragController(viewer)
    return controller


@dataclass
class _Failure:
    """An exception handed out of a worker as its return value.

    superqt drops a ``RuntimeError`` raised inside a worker (it takes it for a deleted Qt
    object) without emitting ``errored`` or ``finished``; torch raises RuntimeErrors
    (out of memory among them), so every error travels as a value instead.
    """

    error: Exception


class DragController:
    """Loads models, makes starting images and runs drags on one viewer's owned layers.

    It holds its viewer weakly, so closing the viewer frees it (and everything it cached).
    """

    #: A one-line status for the widget (step, distance left, s/step, outcome).
    status = Signal(str)
    #: True while a model loads or a drag runs (the widget disables Run).
    busy = Signal(bool)
    #: A new starting image is shown: ``(backend, (H, W))`` (the widget shows its preset).
    image_ready = Signal(object, object)

    def __init__(self, viewer):
        self._viewer = weakref.ref(viewer)
        self.layers = L.OwnedLayers(viewer)
        self.layers.reconnect()
        self._stop = threading.Event()
        self._busy = False
        self._job: _Job | None = None  # the drag running now (or last)
        self._backends: dict[tuple[str, str], Any] = {}
        viewer.dims.events.point.connect(self._on_slice_changed)

    @property
    def viewer(self):
        return self._viewer()

    @property
    def running(self) -> bool:
        return self._busy

    def stop(self) -> None:
        """Ask the running drag to stop after its current step (the engine honours it)."""
        self._stop.set()

    def retarget(self, targets) -> None:
        """Give the running drag new targets (image pixels); it takes them at its next
        decision.  Raises InputError for targets the run cannot take (count, bounds)."""
        job = self._job
        if job is not None and not job.finished and not job.steps.finished:
            job.steps.targets.set(targets)

    # ----------------------------------------------------------------- history
    def undo(self) -> int | None:
        """Show the edit the selected one was made from; nothing is deleted.  Its index."""
        entries = self._history()
        parent = entries[self.layers.selected_slice()].get("parent") if entries else None
        return self._go_to(parent, "nothing to undo: this is the starting image")

    def redo(self) -> int | None:
        """Show the latest edit made from the selected one (what Undo came back from)."""
        current = self.layers.selected_slice()
        children = [e["slice"] for e in self._history() if e.get("parent") == current]
        return self._go_to(max(children, default=None), "nothing to redo from this edit")

    def _history(self) -> list[dict]:
        self._refuse_if_busy()
        edits = self.layers.edits
        return list(edits.metadata.get("edits", [])) if edits is not None else []

    def _go_to(self, index: int | None, nothing: str) -> int | None:
        if index is None:
            self.status.emit(nothing)
            return None
        self.layers.select_slice(index)
        entry = self._history()[index]
        label = entry.get("method") if entry.get("instruction") else "starting image"
        self.status.emit(f"showing edit {index} ({label}); Run continues from it")
        return index

    # ------------------------------------------------------------------ models
    def backend_for(self, model: str, device: str = "auto"):
        """The backend for a MODEL string, loaded once per (model, device)."""
        key = (str(model), str(device))
        if key not in self._backends:
            from napari_freedrag.models.registry import load_generator

            self._backends[key] = load_generator(str(model), device=device)
        return self._backends[key]

    def new_image(
        self,
        model: str | Any = "cells",
        seed: int = 0,
        truncation: float = 0.7,
        *,
        device: str = "auto",
        source=None,
        prompt: str = "",
        lora_steps: int = 0,
        wait: bool = False,
    ):
        """Start a fresh ``FreeDrag edits`` stack from a seed or from a source image layer.

        ``model`` is a MODEL string or a backend object (tests, scripts).  ``source`` is a
        napari Image layer: its shown 2D slice is inverted or projected (StyleGAN2) and the
        results keep its scale and translate.
        """
        self._refuse_if_busy()
        self._stop.clear()
        rgb, info = self._source_pixels(source) if source is not None else (None, None)

        def load():
            backend = model if not isinstance(model, str) else self.backend_for(model, device)
            if rgb is None:
                state = backend.sample(int(seed), truncation=float(truncation))
            elif hasattr(backend, "invert"):
                # StyleGAN2 projection honours Stop; the state reached so far is shown.
                stop = {"stop": self._stop} if backend.kind == "stylegan2" else {}
                state = backend.invert(rgb, prompt=prompt, lora_steps=int(lora_steps), **stop)
            else:
                raise ModelError(
                    f"model {backend.name!r} cannot edit a real image; choose a StyleGAN2 or "
                    "latent-diffusion model, or set 'source image' to none to sample from a seed"
                )
            return backend, state, start_image(backend, state)

        def shown(out):
            backend, state, first = out
            geometry = form = None
            if source is not None:  # cover the source's extent, whatever size the model used
                zoom = np.array(info.size) / np.array(first.shape[:2])
                geometry = (
                    tuple(np.array(source.scale[-2:]) * zoom),
                    tuple(source.translate[-2:]),
                )
                if tuple(state.image_size) == info.size and not source.rgb:
                    colormap = getattr(source.colormap, "name", "gray")
                    form = L.SourceForm(info, tuple(source.contrast_limits), colormap)
            entry = {
                "generated": True,
                "model": backend.name,
                "kind": backend.kind,
                "device": str(backend.device),
                "seed": None if source is not None else int(seed),
                "truncation": None if source is not None else float(truncation),
                "source": None if source is None else source.name,
                "instruction": None,
                **jsonable({"info": state.info}),
            }
            record = L.EditRecord(state, backend)
            self.layers.start_stack(first, entry, record, geometry, form)
            origin = f"from '{source.name}'" if source is not None else f"seed {seed}"
            projected = state.info.get("projection")
            if projected:
                origin += (f", projected ({projected['mode']}, {projected['steps']} steps): PSNR "
                           f"{projected['psnr']:.1f} dB, SSIM {projected['ssim']:.2f}")  # fmt: skip
            self.status.emit(f"{backend.name}: new image {origin}")
            self.image_ready.emit(backend, tuple(first.shape[:2]))

        if wait:
            shown(load())
            return self.layers.edits
        return self._start_worker(load, returned=shown, description="loading model")

    def _source_pixels(self, source):
        """The 2D slice of ``source`` on screen as model RGB, and how to map results back.

        The layer's contrast limits set the value range, so what the model sees is what the
        user sees; the layer itself is only read.
        """
        from napari_freedrag.imaging import slice_index, take_slice, to_model_rgb

        step = np.round(source.world_to_data(self.viewer.dims.point)).astype(int)
        index = slice_index(source.data.shape, tuple(step), rgb=source.rgb)
        value_range = None if source.rgb else tuple(source.contrast_limits)
        return to_model_rgb(take_slice(source.data, index), value_range=value_range)

    # -------------------------------------------------------------------- drag
    def run(
        self,
        *,
        method: str = "freedrag",
        handles=None,
        targets=None,
        mask=FROM_LAYER,
        max_steps: int | None = None,
        preview_every: int | None = None,
        keep_frames: bool = False,
        wait: bool = False,
        **params,
    ):
        """Drag from the selected ``FreeDrag edits`` slice.

        ``handles`` / ``targets`` in image pixels ``(row, col)`` replace the points layers
        (None = read them); ``mask`` is an array, None (no mask) or ``FROM_LAYER``.
        Returns the worker, or the DragResult when ``wait=True``.
        Raises :class:`FreeDragError` for bad input before anything changes.
        """
        job = self._prepare(method, handles, targets, mask, max_steps, preview_every, params)
        job.keep_frames = keep_frames
        if handles is not None:
            self.layers.set_points_from_image(L.HANDLES, job.handles)
        if targets is not None:
            self.layers.set_points_from_image(L.TARGETS, job.targets)
        return self._run_sync(job) if wait else self._run_async(job)

    def _prepare(self, method, handles, targets, mask, max_steps, preview_every, params) -> _Job:
        self._refuse_if_busy()
        records = self.layers.records()
        if not records:
            raise InputError("there is no image to edit yet: press 'New image' first")
        self.layers.repair()
        parent = self.layers.selected_slice()
        record = records[parent]
        size = tuple(int(s) for s in record.state.image_size)
        if handles is None:
            handles = self.layers.points_in_image(L.HANDLES)
        if targets is None:
            targets = self.layers.points_in_image(L.TARGETS)
        handles, targets = check_points(handles, targets, size)
        if isinstance(mask, str) and mask == FROM_LAYER:
            mask = self.layers.mask_array(size)
        else:
            mask = L.check_mask(mask, size)
        job = _Job(
            record, parent, handles, targets, mask, method, max_steps, preview_every,
            params, keep_frames=False,
        )  # fmt: skip
        from napari_freedrag.engine.run import drag_steps

        # The engine checks its arguments when called, before the first step: a bad
        # parameter is reported here, in the main thread, with nothing changed yet.
        job.steps = drag_steps(
            record.backend, record.state, handles, targets, mask, method,
            max_steps=max_steps, preview_every=preview_every, stop=self._stop, **params,
        )  # fmt: skip
        return job

    def _refuse_if_busy(self):
        if self._busy:
            raise InputError("FreeDrag is already running: wait for it to finish or press Stop")

    @staticmethod
    def _steps(job: _Job):
        try:
            yield from job.steps
            return job.steps.result
        except Exception as exc:
            return _Failure(exc)

    def _begin(self, job: _Job):
        from napari.utils import progress

        self._stop.clear()
        self._job = job
        self._set_busy(True)
        handles_layer = self.layers.get(L.HANDLES)
        job.snapshot = {
            "handles": np.array(handles_layer.data, copy=True),
            "working": np.array(self.layers.working.data, copy=True),
        }
        job.started = time.perf_counter()
        total = job.steps.settings.max_steps  # the run's resolved preset (computed once)
        job.progress = progress(total=total, desc=f"FreeDrag ({job.method})")

    def _on_step(self, job: _Job, step) -> None:
        """Show one step.  Finishes its layer work before touching the progress bar, whose
        update lets Qt deliver the next queued steps (napari's bar processes events)."""
        if job.finished or step.index <= job.shown_step:
            return
        job.shown_step = step.index
        if step.image is not None:
            self.layers.show_image(step.image)
            if job.keep_frames:
                job.frames.append(np.asarray(step.image))
        self.layers.set_points_from_image(L.HANDLES, step.points)
        targets = job.targets if step.targets is None else step.targets  # moved mid-run
        left = float(np.max(np.linalg.norm(targets - np.asarray(step.points), axis=1)))
        per_step = (time.perf_counter() - job.started) / max(step.index, 1)
        self.status.emit(
            f"step {step.index}: {left:.1f} px left, {per_step:.2f} s/step, loss {step.loss:.3g}"
        )
        now = time.perf_counter()
        if now - job.bar_updated > PROGRESS_INTERVAL_S:
            job.bar_updated = now
            job.progress.update(step.index - job.progress.n)

    def _on_result(self, job: _Job, result) -> None:
        job.finished = True
        entry = _edit_entry(job, result)
        record = L.EditRecord(result.state, job.record.backend)
        self.layers.append_edit(np.asarray(result.image), entry, record, job.parent)
        self.layers.set_points_from_image(L.HANDLES, result.points)
        if job.keep_frames:
            frames = job.frames or [np.asarray(result.image)]
            self.layers.show_frames(np.stack(frames), entry, len(self.layers.records()) - 1)
        outcome = "converged" if result.converged else "max steps reached"
        if not result.converged and result.report.get("points_arrived"):
            outcome = "not converged: the points arrived but the content did not follow"
        outcome = "stopped" if result.stopped else outcome
        per_step = result.seconds / max(result.steps, 1)
        arrival = result.report.get("content_summary")
        self.status.emit(
            f"{outcome} after {result.steps} steps ({per_step:.2f} s/step"
            + (f", {arrival}" if arrival else "")
            + f"): edit {len(self.layers.records()) - 1} in '{L.EDITS}'"
        )

    def _on_error(self, job: _Job, exc: BaseException) -> None:
        """Undo the live preview so a failed run changes nothing."""
        job.finished = True
        self.layers.get(L.HANDLES).data = job.snapshot["handles"]
        self.layers.working.data = job.snapshot["working"]
        self.status.emit(f"failed: {one_line(exc)}")

    def _end(self, job: _Job) -> None:
        job.progress.close()
        self._set_busy(False)

    def _run_sync(self, job: _Job):
        self._begin(job)
        try:
            for step in job.steps:
                self._on_step(job, step)
                _process_events()
            result = job.steps.result
            self._on_result(job, result)
        except BaseException as exc:
            self._on_error(job, exc)
            raise
        finally:
            self._end(job)
        return result

    def _run_async(self, job: _Job):
        self._begin(job)

        def returned(result):
            if isinstance(result, _Failure):
                self._on_error(job, result.error)
                notify_error(result.error)
            else:
                self._on_result(job, result)

        worker = self._make_worker(
            self._steps,
            job,
            yielded=lambda step: self._on_step(job, step),
            returned=returned,
            errored=lambda exc: (self._on_error(job, exc), notify_error(exc)),
            finished=lambda: self._end(job),
        )
        worker.start()
        return worker

    def _start_worker(self, func, *, returned, description: str):
        """Run ``func`` (model loading, sampling) off the main thread, results shown after."""
        self._set_busy(True)
        self.status.emit(f"{description}…")

        def failed(exc):
            self.status.emit(f"failed: {one_line(exc)}")
            notify_error(exc)

        def guarded():
            try:
                return func()
            except Exception as exc:
                return _Failure(exc)

        def done(out):
            failed(out.error) if isinstance(out, _Failure) else returned(out)

        worker = self._make_worker(
            guarded, returned=done, errored=failed, finished=lambda: self._set_busy(False)
        )
        worker.start()
        return worker

    def _make_worker(self, func, *args, **connect):
        from napari.qt.threading import create_worker

        return create_worker(func, *args, _start_thread=False, _connect=connect)

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.busy.emit(busy)

    def _on_slice_changed(self, event=None) -> None:
        """Show the selected edit in the working image (what Run will continue from)."""
        edits, working = self.layers.edits, self.layers.working
        if self._busy or edits is None or working is None:
            return
        image = edits.data[self.layers.selected_slice()]
        if image.shape == working.data.shape and not np.array_equal(image, working.data):
            working.data = image

    def save_selected(self, path) -> Any:
        """Write the selected edit to PNG/TIFF with its instruction and parameters inside."""
        from napari_freedrag.io import provenance_from_report, write_image

        edits = self.layers.edits
        if edits is None:
            raise InputError("there is no edit to save yet: press 'New image' and Run first")
        index = self.layers.selected_slice()
        rgb = self.layers.records()[index].rgb
        entry = dict(edits.metadata["edits"][index])
        provenance = {**provenance_from_report(entry), "slice": index, "edit": entry}
        return write_image(path, rgb, provenance)


def check_points(handles, targets, image_size) -> tuple[np.ndarray, np.ndarray]:
    """Validate handle/target pairs in image pixels; raise InputError naming the problem."""
    handles = np.asarray(handles, dtype=float).reshape(-1, 2)
    targets = np.asarray(targets, dtype=float).reshape(-1, 2)
    if len(handles) == 0 and len(targets) == 0:
        raise InputError(
            "no drag points: add a handle point and a target point "
            "(the n-th handle moves to the n-th target)"
        )
    if len(handles) != len(targets):
        raise InputError(
            f"{len(handles)} handle(s) but {len(targets)} target(s): add or delete points so "
            "every handle has a target (pairs are matched by order)"
        )
    height, width = image_size
    for kind, points in (("handle", handles), ("target", targets)):
        for i, (row, col) in enumerate(points):
            if not (0 <= row <= height - 1 and 0 <= col <= width - 1):
                raise InputError(
                    f"{kind} {i + 1} at (row {row:.1f}, col {col:.1f}) is outside the "
                    f"{height}x{width} image: move it onto the image"
                )
    return handles, targets


def start_image(backend, state) -> np.ndarray:
    """The starting image as uint8 RGB (rendered when the state carries none)."""
    if state.image is not None:
        return np.asarray(state.image)
    session = backend.session(state, None, "freedrag")
    return np.asarray(session.render(session.latent.detach()))


def _edit_entry(job: _Job, result) -> dict[str, Any]:
    """JSON-able provenance of one finished edit, stored in the layer metadata."""
    report = jsonable(dict(getattr(result, "report", None) or {}))
    mask_pixels = None if job.mask is None else int(job.mask.sum())
    instruction = {
        "handles": job.handles.tolist(),
        "targets": job.targets.tolist(),
        "final_points": np.asarray(result.points).tolist(),
        "mask": "none" if mask_pixels is None else f"{mask_pixels} editable pixels",
        "continued_from_slice": job.parent,
    }
    info = dict(job.record.state.info or {})
    entry = {
        **report,
        "generated": True,
        "model": report.get("model", job.record.backend.name),
        "method": job.method,
        "seed": report.get("seed", info.get("seed")),
        "steps": int(result.steps),
        "converged": bool(result.converged),
        "stopped": bool(result.stopped),
        "parameters": report.get("parameters", jsonable(getattr(result, "params", {}))),
        "instruction": instruction,
    }
    return entry


def one_line(exc: BaseException) -> str:
    """The message a user reads: FreeDragErrors as written, bugs with their type."""
    if isinstance(exc, FreeDragError):
        text = str(exc)
    elif "out of memory" in str(exc).lower():
        text = (
            "out of memory on the model's device: use a smaller model or image, free memory "
            "used by other programs, or choose device 'cpu'"
        )
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (see the log for details)"
    return " ".join(text.split())


def notify_error(exc: BaseException) -> None:
    """Show ``exc`` as one napari notification (bugs also go to the log with traceback)."""
    from napari.utils.notifications import show_error

    if not isinstance(exc, FreeDragError):
        log.error("FreeDrag failed", exc_info=exc)
    show_error(f"FreeDrag: {one_line(exc)}")


def _process_events() -> None:
    """Let a viewer repaint between steps of a synchronous run."""
    from qtpy.QtWidgets import QApplication

    if QApplication.instance() is not None:
        QApplication.processEvents()
