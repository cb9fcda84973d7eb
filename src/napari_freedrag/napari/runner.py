"""The one FreeDrag controller of a viewer: its edit history, owned layers and running job.

The widget, the console's ``napari_drag`` and the File menu all act through it.  Work
(model loading, inversion, the drag) runs in a napari ``thread_worker``; layers are touched
only in the main thread.  Scripts can ask for a synchronous run (``wait=True``).

A user's layers are only ever read; a failed run changes nothing; a finished edit lands
in :attr:`DragController.history` even when the layers showing it were deleted meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
from psygnal import Signal

from napari_freedrag.errors import FreeDragError, InputError, ModelError
from napari_freedrag.napari import job as J
from napari_freedrag.napari import layers as L
from napari_freedrag.napari.history import Edit, EditHistory, ImageForm
from napari_freedrag.napari.placement import Placement, placement_of
from napari_freedrag.napari.source import describe_source, sample_marker, source_form

log = logging.getLogger(__name__)

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
        wait: bool = False,
    ):
        """Show a fresh working image, from a seed or from the plane of ``source`` on screen.

        New image clears the handles, targets and mask (they belong to the image they were
        drawn on).  ``source`` is only read.  Returns the worker, or the Edit (``wait``).
        """
        self._refuse_if_busy()
        viewer = self.viewer
        form, rgb, description = ImageForm(Placement((0, 0))), None, None
        marker = sample_marker(source)
        if marker is not None:  # a FreeDrag sample: continue from its own seed
            model = model if not isinstance(model, str) else marker["model"]
            seed, truncation = marker["seed"], marker["truncation"]
            form = ImageForm(placement_of(source, viewer.dims.point))
            description = describe_source(source, form.placement)
        elif source is not None:
            form, rgb = source_form(source, placement_of(source, viewer.dims.point))
            description = form.source
        self.status.emit("loading the model…")

        def load():
            backend = model if not isinstance(model, str) else self.backend_for(model, device)
            if rgb is None:
                state = backend.sample(int(seed), truncation=float(truncation))
            elif hasattr(backend, "invert"):
                state = backend.invert(rgb, prompt=prompt, lora_steps=int(lora_steps))
            else:
                raise ModelError(
                    f"model {backend.name!r} cannot edit a real image; choose a latent-diffusion"
                    " model (ldm:PATH) or set 'source image' to none to sample from a seed"
                )
            if state.image is None:
                state.image = start_image(backend, state)
            return backend, state

        def shown(out) -> Edit:
            backend, state = out
            size = tuple(int(s) for s in state.image_size)
            final_form = form if form.placement.size != (0, 0) else ImageForm(Placement(size))
            entry = {
                "generated": True,
                "model": backend.name,
                "kind": backend.kind,
                "device": str(backend.device),
                "seed": None if rgb is not None else int(seed),
                "truncation": None if rgb is not None else float(truncation),
                "source": description,
                "placement": final_form.placement.to_json(),
                "instruction": None,
                "info": _jsonable(state.info),
            }
            edit = Edit(state, backend, final_form, entry, None, "start")
            replaced = self.layers.placement != final_form.placement
            self._show_current(self.history.append(edit))
            self.layers.clear_points()
            mask = self.layers.get(L.MASK)
            if mask is not None and np.any(mask.data):
                mask.data = np.zeros_like(mask.data)
            if replaced:
                self.viewer.reset_view()
            origin = (
                f"plane {list(final_form.placement.plane)} of '{source.name}'"
                if (source is not None and final_form.placement.plane)
                else (f"'{source.name}'" if source is not None else f"seed {seed}")
            )
            self.status.emit(
                f"{backend.name}: new image from {origin} (edit {len(self.history) - 1}); "
                "points cleared: click a handle, then its target"
            )
            self.image_ready.emit(backend, size)
            return edit

        if wait:
            self._set_busy(True)
            try:
                return shown(load())
            finally:
                self._set_busy(False)
        return self._start_worker(load, shown)

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
        zoom = _zoom(edit)
        handles = self.layers.points_in_image(L.HANDLES) if handles is None else handles
        targets = self.layers.points_in_image(L.TARGETS) if targets is None else targets
        if isinstance(mask, str) and mask == FROM_LAYER:
            mask = _resize_mask(self.layers.mask_array(), edit)
        from napari_freedrag.engine.run import drag_steps

        model_handles, model_targets = _to_model(handles, zoom), _to_model(targets, zoom)
        # The engine checks points, mask and parameters when called: bad input is
        # reported here, in the main thread, with nothing changed yet.
        steps = drag_steps(
            edit.backend, edit.state, model_handles, model_targets, mask, method,
            max_steps=max_steps, preview_every=preview_every, stop=self._stop, **params,
        )  # fmt: skip
        total = max_steps or _preset_value(edit, method, "max_steps")
        return J.Job(
            self.history.current_index, edit, np.asarray(model_handles, float).reshape(-1, 2),
            np.asarray(model_targets, float).reshape(-1, 2), mask, method, total, False, steps,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop after the step being computed; the newest step is shown at once."""
        self._stop.set()
        job = self._job
        if job is not None and not job.finished and job.received is not None:
            self._show_step(job)
            self.status.emit(f"stopping after step {job.received.index}…")

    def _show_step(self, job: J.Job) -> None:
        """Show the newest step received (points, preview, status, progress)."""
        step = job.received
        if job.finished or step is None or self.viewer is None:
            return
        job.shown_at = time.perf_counter()
        job.shown_step = step.index
        zoom = _zoom(job.edit)
        if job.image is not None:
            self.layers.update_image(job.edit.form.display(job.image))
            job.image = None
        self.layers.set_points_from_image(L.HANDLES, _from_model(step.points, zoom))
        left = float(np.max(np.linalg.norm(job.targets - np.asarray(step.points), axis=1)))
        per_step = (time.perf_counter() - job.started) / max(step.index, 1)
        self.status.emit(
            f"running {job.method}: step {step.index} of {job.total}, {left:.1f} px left, "
            f"{per_step:.2f} s/step"
        )
        self.progress.emit(int(step.index), int(job.total))

    def _on_step(self, job: J.Job, step) -> None:
        J.acknowledge(job, step)
        if job.finished:
            return
        due = J.receive(job, step)
        if due <= 0:
            self._show_step(job)
        else:
            J.show_later(job, due, self._show_step)

    def _on_result(self, job: J.Job, result) -> None:
        job.finished = True
        shown = job.shown_step
        entry = _edit_entry(job, result)
        edit = Edit(result.state, job.edit.backend, job.edit.form, entry, job.parent, job.method)
        edit.frames = job.frames
        index = self.history.append(edit)
        self._show_current(index)
        self.layers.set_points_from_image(L.HANDLES, _from_model(result.points, _zoom(edit)))
        per_step = result.seconds / max(result.steps, 1)
        if result.stopped:
            outcome = f"stopped: kept step {result.steps} (last shown: step {shown})"
        else:
            outcome = "converged" if result.converged else "max steps reached"
            outcome = f"{outcome} after {result.steps} steps"
        self.status.emit(f"{outcome} ({per_step:.2f} s/step): edit {index}")

    def _on_error(self, job: J.Job, exc: BaseException) -> None:
        """Show the current edit again, so a failed run changes nothing."""
        job.finished = True
        if self.viewer is not None and self.history.current is not None:
            self._show_current(self.history.current_index)
            self.layers.set_points_from_image(L.HANDLES, _from_model(job.handles, _zoom(job.edit)))
        self.status.emit(f"failed: {one_line(exc)}")

    def _end(self, job: J.Job) -> None:
        self._job = None
        self._set_busy(False)

    def _run_sync(self, job: J.Job):
        steps = J.guarded_steps(job)
        try:
            while True:
                try:
                    step = next(steps)
                except StopIteration as done:
                    result = done.value
                    break
                if J.receive(job, step) <= 0:
                    self._show_step(job)
                    J.process_events()
            if isinstance(result, J.Failure):
                raise result.error
            self._on_result(job, result)
        except BaseException as exc:
            self._on_error(job, exc)
            raise
        finally:
            self._end(job)
        return result

    def _run_async(self, job: J.Job):
        def returned(result):
            if isinstance(result, J.Failure):
                self._on_error(job, result.error)
                notify_error(result.error)
            else:
                self._on_result(job, result)

        worker = J.make_worker(
            J.guarded_steps,
            job,
            yielded=lambda step: self._on_step(job, step),
            returned=returned,
            errored=lambda exc: (self._on_error(job, exc), notify_error(exc)),
            finished=lambda: self._end(job),
        )
        worker.start()
        return worker

    def _start_worker(self, func, returned):
        """Run ``func`` (model loading, inversion) off the main thread, results shown after."""
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
            J.guarded_call, func, returned=done, errored=failed,
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
        edit = self.history.undo()
        self._show_current(self.history.current_index)
        return edit

    def redo(self) -> Edit | None:
        """Show the edit undo stepped back from."""
        self._refuse_if_busy()
        edit = self.history.redo()
        self._show_current(self.history.current_index)
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


def start_image(backend, state) -> np.ndarray:
    """The starting image as uint8 RGB (rendered when the state carries none)."""
    if state.image is not None:
        return np.asarray(state.image)
    session = backend.session(state, None, "freedrag")
    return np.asarray(session.render(session.latent.detach()))


def _zoom(edit: Edit) -> np.ndarray:
    """Model pixels per working-image pixel, per axis (1 when the model keeps the size)."""
    model = np.asarray(edit.state.image_size, float)
    return model / np.asarray(edit.form.placement.size, float)


def _to_model(points, zoom):
    """Working-image pixels to model pixels (pixel centres map to pixel centres)."""
    if np.all(zoom == 1.0):
        return points
    array = np.asarray(points, dtype=float)
    return (array + 0.5) * zoom - 0.5


def _from_model(points, zoom) -> np.ndarray:
    return (np.asarray(points, dtype=float) + 0.5) / zoom - 0.5


def _resize_mask(mask, edit: Edit):
    """The painted mask at the model's size (nearest neighbour: labels stay labels)."""
    if mask is None:
        return None
    size = tuple(int(s) for s in edit.state.image_size)
    if mask.shape == size or mask.shape != tuple(edit.form.placement.size):
        return mask
    rows = np.minimum((np.arange(size[0]) + 0.5) * mask.shape[0] // size[0], mask.shape[0] - 1)
    cols = np.minimum((np.arange(size[1]) + 0.5) * mask.shape[1] // size[1], mask.shape[1] - 1)
    return mask[rows.astype(int)[:, None], cols.astype(int)[None, :]]


def _preset_value(edit, method, name, default=300):
    try:
        return int(getattr(edit.backend.preset(method, tuple(edit.state.image_size)), name))
    except (AttributeError, TypeError, ValueError, FreeDragError):
        return default


def _edit_entry(job: J.Job, result) -> dict[str, Any]:
    """JSON-able provenance of one finished edit (what Save writes into the file)."""
    report = _jsonable(dict(getattr(result, "report", None) or {}))
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
        "parameters": report.get("parameters", _jsonable(getattr(result, "params", {}))),
        "instruction": {
            "handles": job.handles.tolist(),
            "targets": job.targets.tolist(),
            "final_points": np.asarray(result.points).tolist(),
            "mask": "none" if mask_pixels is None else f"{mask_pixels} editable pixels",
            "continued_from_edit": job.parent,
        },
    }


def _jsonable(value: Any) -> Any:
    from napari_freedrag.io import _jsonable as convert

    return convert(value)


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
