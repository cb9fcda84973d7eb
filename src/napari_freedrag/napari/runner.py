"""The one FreeDrag controller of a viewer: its edit history, owned layers and running job.

The widget, the console's ``napari_drag`` and the File menu all act through it.  Work
(model loading, inversion, the drag) runs in a napari ``thread_worker``; layers are touched
only in the main thread.  Scripts can ask for a synchronous run (``wait=True``).

A user's layers are only ever read; a failed run changes nothing; a finished edit lands
in :attr:`DragController.history` even when the layers showing it were deleted meanwhile.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
from psygnal import Signal

from napari_freedrag.engine.warmup import warm_up_optimiser
from napari_freedrag.errors import FreeDragError, InputError
from napari_freedrag.napari import job as J
from napari_freedrag.napari import layers as L
from napari_freedrag.napari.history import (
    Edit,
    EditHistory,
    from_model,
    resize_mask,
    to_model,
    zoom_of,
)
from napari_freedrag.napari.notify import notify_error, one_line
from napari_freedrag.napari.source import plan_start, sample_marker

#: A mask argument meaning "read the painted mask layer".
FROM_LAYER = "layer"
#: Loaded models kept per viewer (least recently used dropped first).
MODEL_CACHE_SIZE = 2
_ATTRIBUTE = "_napari_freedrag_controller"


def unwrap_viewer(viewer):
    """The real viewer behind the ``PublicOnlyProxy`` napari hands plugin widgets."""
    return getattr(viewer, "__wrapped__", viewer)


def controller_for(viewer) -> DragController:
    """The one controller of ``viewer``, kept on its window (it lives as long as the window).

    One per viewer means a reopened widget finds the history, the running drag and the
    loaded models, and no second set of event connections piles up.
    """
    viewer = unwrap_viewer(viewer)
    window = getattr(viewer, "window", None)
    if window is None:
        raise InputError("FreeDrag needs a napari.Viewer (with a window), not a bare model")
    controller = getattr(window, _ATTRIBUTE, None)
    if controller is None:
        controller = DragController(viewer)
        setattr(window, _ATTRIBUTE, controller)
    return controller


class DragController:
    """Loads models, makes working images, runs drags and keeps every edit of one viewer."""

    #: A one-line status (loading…, step, outcome, saved…).
    status = Signal(str)
    #: True while a model loads or a drag runs.
    busy = Signal(bool)
    #: ``(step, total)`` while a drag runs, at the display rate.
    progress = Signal(int, int)
    #: A new working image is shown: ``(backend, (H, W))`` (the widget shows its preset).
    image_ready = Signal(object, object)

    def __init__(self, viewer):
        self._viewer = weakref.ref(viewer)
        self.layers = L.OwnedLayers(viewer)
        self.history = EditHistory()
        self._models: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._stop = threading.Event()
        self._busy = False
        self._job: J.Job | None = None
        self._sample = None  # a FreeDrag sample just opened, to adopt as the working image
        viewer.layers.events.inserted.connect(self._on_layer_inserted)

    @property
    def viewer(self):
        return self._viewer()

    @property
    def running(self) -> bool:
        return self._busy

    @property
    def current_edit(self) -> Edit | None:
        return self.history.current

    @property
    def active_run(self):
        """The engine's DragRun of the drag in progress (None when idle): live targets."""
        return None if self._job is None else self._job.steps

    def retarget(self, targets) -> None:
        """Give the running drag new targets (working-image pixels); it takes them at its
        next decision.  Raises InputError for targets the run cannot take (count, bounds)."""
        run = self.active_run
        if run is not None and not run.finished:
            run.targets.set(to_model(targets, zoom_of(self._job.edit)))

    # ---------------------------------------------------------------- models
    def backend_for(self, model: str, device: str = "auto"):
        """The backend for a MODEL string; the last MODEL_CACHE_SIZE loaded are kept."""
        key = (str(model), str(device))
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        from napari_freedrag.models.registry import load_generator

        backend = load_generator(str(model), device=device)
        self._models[key] = backend
        while len(self._models) > MODEL_CACHE_SIZE:
            self._models.popitem(last=False)
        return backend

    def is_source(self, layer) -> bool:
        """Whether ``layer`` can be a source image: a user's image (or a FreeDrag sample)."""
        from napari.layers import Image

        return isinstance(layer, Image) and L.role_of(layer) is None and not self.layers.owns(layer)

    def _on_layer_inserted(self, event=None) -> None:
        """File > Open Sample: the (newest) sample becomes the working image."""
        layer = getattr(event, "value", None)
        if sample_marker(layer) is None:
            return
        from qtpy.QtCore import QTimer

        if self._sample is None:
            QTimer.singleShot(0, self._adopt_sample)
        self._sample = layer

    def _adopt_sample(self) -> None:
        layer, self._sample = self._sample, None
        viewer = self.viewer
        if self._busy or viewer is None or not any(x is layer for x in viewer.layers):
            return
        try:
            self.new_image(source=layer)
        except FreeDragError as exc:
            notify_error(exc)

    # ------------------------------------------------------------- new image
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
        projection: dict[str, Any] | None = None,
        wait: bool = False,
    ):
        """Show a fresh working image, from a seed or from the plane of ``source`` on screen.

        New image clears the handles, targets and mask (they belong to the image they were
        drawn on).  ``source`` is only read; with a StyleGAN2 model it is projected (Stop
        keeps the state reached; ``projection``: ``invert_steps`` options such as ``mode``
        and ``steps``).  Returns the worker, or the Edit (``wait``).
        """
        self._refuse_if_busy()
        plan = plan_start(source, self.viewer.dims.point, model, seed, truncation)
        self._stop.clear()
        self.status.emit("loading the model…")

        def load():
            backend = plan.model
            if isinstance(backend, str):
                backend = self.backend_for(backend, device)
            state = yield from plan.start(backend, prompt, lora_steps, self._stop, projection)
            warm_up_optimiser()  # not at the first Run
            return backend, state

        def projecting(progress) -> None:
            step, total = progress
            self.status.emit(f"projecting {plan.origin()}: step {step} of {total}")
            self.progress.emit(step, total)

        def shown(out) -> Edit:
            backend, state = out
            edit = plan.edit(backend, state)
            replaced = self.layers.placement != edit.form.placement
            self._show_current(self.history.append(edit))
            self.layers.clear_points()
            mask = self.layers.get(L.MASK)
            if mask is not None and np.any(mask.data):
                mask.data = np.zeros_like(mask.data)
            if replaced:
                self.viewer.reset_view()
            number = len(self.history) - 1
            self.status.emit(
                f"{backend.name}: new image from {plan.origin(state)} (edit {number});"
                " points cleared: click a handle, then its target"
            )
            self.image_ready.emit(backend, tuple(int(s) for s in state.image_size))
            return edit

        if wait:
            self._set_busy(True)
            try:
                return shown(J.drain(load(), lambda p: (projecting(p), J.process_events())))
            finally:
                self._set_busy(False)
        return self._start_worker(load, shown, projecting)

    # ------------------------------------------------------------------ drag
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
        """Drag from the current edit; a finished run appends an edit and shows it.

        ``handles`` / ``targets`` in working-image pixels ``(row, col)`` replace the points
        layers (None = read them); ``mask`` is an array, None (no mask) or FROM_LAYER.
        Returns the worker, or the DragResult when ``wait=True``.  Bad input raises
        :class:`FreeDragError` (the engine's one check) before anything changes.
        """
        job = self._prepare(method, handles, targets, mask, max_steps, preview_every, params)
        job.keep_frames = keep_frames
        if handles is not None:
            self.layers.set_points_from_image(L.HANDLES, handles)
        if targets is not None:
            self.layers.set_points_from_image(L.TARGETS, targets)
        self._stop.clear()
        self._job = job
        self._set_busy(True)
        self.status.emit(f"running {method}… (step 0 of {job.total})")
        return self._run_sync(job) if wait else self._run_async(job)

    def _prepare(self, method, handles, targets, mask, max_steps, preview_every, params) -> J.Job:
        self._refuse_if_busy()
        edit = self.history.current
        if edit is None:
            raise InputError("there is no image to edit yet: press 'New image' first")
        if max_steps is not None and not isinstance(max_steps, bool) and max_steps == 0:
            raise InputError("max steps is 0, so Run would change nothing: set 1 or more")
        if self.layers.working is None or self.layers.placement != edit.form.placement:
            self._show_current(self.history.current_index)  # re-create what was deleted
        else:
            self.layers.ensure_overlays()
        zoom = zoom_of(edit)
        handles = self.layers.points_in_image(L.HANDLES) if handles is None else handles
        targets = self.layers.points_in_image(L.TARGETS) if targets is None else targets
        if isinstance(mask, str) and mask == FROM_LAYER:
            mask = resize_mask(self.layers.mask_array(), edit)
        from napari_freedrag.engine.run import drag_steps

        model_handles, model_targets = to_model(handles, zoom), to_model(targets, zoom)
        # The engine checks points, mask and parameters when called: bad input is
        # reported here, in the main thread, with nothing changed yet.
        steps = drag_steps(
            edit.backend, edit.state, model_handles, model_targets, mask, method,
            max_steps=max_steps, preview_every=preview_every, stop=self._stop, **params,
        )  # fmt: skip
        total = int(steps.settings.max_steps)
        return J.Job(
            self.history.current_index, edit, np.asarray(model_handles, float).reshape(-1, 2),
            np.asarray(model_targets, float).reshape(-1, 2), mask, method, total, False, steps,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop after the step being computed; the newest step is shown at once."""
        if self._stop.is_set():
            return  # already stopping (a progress listener that stops must not recurse)
        self._stop.set()
        job = self._job
        if job is not None and not job.finished and job.latest is not None:
            self._show_step(job)
            self.status.emit(f"stopping after step {job.shown_step}…")

    def _show_step(self, job: J.Job) -> None:
        """Show the newest step the engine finished (points, preview, status, progress)."""
        step, image = J.take(job)
        if job.finished or step is None or self.viewer is None:
            return
        job.shown_at = time.perf_counter()
        job.shown_step = step.index
        zoom = zoom_of(job.edit)
        preview = None if image is None else job.edit.form.display(image)
        self.layers.show_live(preview, from_model(step.points, zoom))
        targets = job.targets if step.targets is None else step.targets  # moved mid-run
        left = float(np.max(np.linalg.norm(targets - np.asarray(step.points), axis=1)))
        per_step = (time.perf_counter() - job.started) / max(step.index, 1)
        self.status.emit(
            f"running {job.method}: step {step.index} of {job.total}, {left:.1f} px left, "
            f"{per_step:.2f} s/step"
        )
        self.progress.emit(int(step.index), int(job.total))

    def _on_result(self, job: J.Job, result) -> None:
        job.finished = True
        shown = job.shown_step
        entry = J.edit_entry(job, result)
        edit = Edit(result.state, job.edit.backend, job.edit.form, entry, job.parent, job.method)
        edit.frames = job.frames
        index = self.history.append(edit)
        self._show_current(index)
        self.layers.set_points_from_image(L.HANDLES, from_model(result.points, zoom_of(edit)))
        self.status.emit(f"{J.outcome(result, shown)}: edit {index}")

    def _on_error(self, job: J.Job, exc: BaseException) -> None:
        """Show the current edit again, so a failed run changes nothing."""
        job.finished = True
        if self.viewer is not None and self.history.current is not None:
            self._show_current(self.history.current_index)
            self.layers.set_points_from_image(L.HANDLES, from_model(job.handles, zoom_of(job.edit)))
        self.status.emit(f"failed: {one_line(exc)}")

    def _end(self, job: J.Job) -> None:
        self._job = None
        self._set_busy(False)

    def _run_sync(self, job: J.Job):
        return J.run_sync(job, self._show_step, self._on_result, self._on_error, self._end)

    def _run_async(self, job: J.Job):
        return J.run_async(job, self._show_step, self._on_result, self._on_error, self._end)

    def _start_worker(self, func, returned, yielded):
        """Run the generator ``func`` (model loading, inversion) off the main thread;
        what it yields and its result are handled here, in the main thread."""
        self._set_busy(True)

        def failed(exc):
            self.status.emit(f"failed: {one_line(exc)}")
            notify_error(exc)

        def done(out):
            if isinstance(out, J.Failure):
                failed(out.error)
            elif self.viewer is not None:
                returned(out)

        worker = J.make_worker(
            J.guarded_yields, func, yielded=yielded, returned=done, errored=failed,
            finished=lambda: self._set_busy(False),
        )  # fmt: skip
        worker.start()
        return worker

    def _refuse_if_busy(self):
        if self._busy:
            raise InputError("FreeDrag is already running: wait for it to finish or press Stop")

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.busy.emit(busy)

    # -------------------------------------------------------------- history
    def select_edit(self, index: int) -> Edit:
        """Show edit ``index`` (Run continues from it); the user's dims are not touched."""
        self._refuse_if_busy()
        edit = self.history.select(index)
        self._show_current(self.history.current_index)
        return edit

    def undo(self) -> Edit | None:
        """Show the current edit's parent; no edit is ever deleted."""
        self._refuse_if_busy()
        return self._walked(self.history.undo(), "nothing to undo: this is the starting image")

    def redo(self) -> Edit | None:
        """Show the edit undo stepped back from."""
        self._refuse_if_busy()
        return self._walked(self.history.redo(), "nothing to redo from this edit")

    def _walked(self, edit: Edit | None, nothing: str) -> Edit | None:
        """Show where undo/redo went (or say why it stayed)."""
        index = self.history.current_index
        self._show_current(index)
        self.status.emit(nothing if edit is None else f"showing edit {index} ({edit.label})")
        return edit

    def _show_current(self, index: int) -> None:
        """Show edit ``index`` in the working layer (re-creating deleted owned layers)."""
        if self.viewer is None or not len(self.history):
            return
        edit = self.history[index]
        self.layers.show(edit.display(), edit.form, {"edit": index, "provenance": edit.entry})

    def frames(self, index: int | None = None) -> np.ndarray:
        """The preview frames ``(T, H, W, 3)`` kept by the run that made edit ``index``."""
        edit = self.history[self.history.current_index if index is None else index]
        return np.stack(edit.frames) if edit.frames else np.zeros((0, 1, 1, 3), np.uint8)

    # ----------------------------------------------------------------- save
    def save_selected(self, path):
        """Write the current edit in its source's form, with its provenance inside."""
        from napari_freedrag.napari.writer import write_edit

        edit = self.history.current
        try:
            if edit is None:
                raise InputError("there is no edit to save yet: press 'New image' and Run first")
            written = write_edit(path, edit.display(), edit.entry, edit.form.placement)
        except FreeDragError as exc:
            self.status.emit(f"save failed: {one_line(exc)}")
            raise
        self.status.emit(f"saved edit {self.history.current_index} to {written}")
        return written
