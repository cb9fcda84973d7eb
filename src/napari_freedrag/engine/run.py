"""The public face of the engine: validate a drag instruction, run it step by step.

``drag_steps`` checks everything a user can get wrong *before* any model work, then
returns a generator: one :class:`Step` per optimiser step, and a :class:`DragResult` as
its return value (``result = yield from drag_steps(...)``).  ``drag`` runs it to the end.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import DivergedError, InputError
from .draggan import run_draggan
from .freedrag import run_freedrag
from .presets import DragGANParams, FreeDragParams, apply_overrides
from .progress import Diverged, Progress
from .protocol import METHODS, Backend, StartState


@dataclass
class Step:
    """One optimiser step. ``points`` are the current carriers, image pixels ``(row, col)``.

    ``decisions`` are the line-search decisions ('A', 'B', 'C'; ``None`` for done points)
    that started the current sub-motion (FreeDrag only).  ``image`` is set when a preview
    is due and at the last step.  ``seconds`` counts from the start of the run.
    """

    index: int
    points: np.ndarray
    loss: float
    point_losses: np.ndarray
    decisions: list[str | None] | None
    done: np.ndarray
    image: np.ndarray | None
    seconds: float


@dataclass
class DragResult:
    """The outcome of a drag: ``state`` continues the edit, ``report`` is plain JSON."""

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
    params: FreeDragParams | DragGANParams | None = None
    report: dict[str, Any] = field(default_factory=dict)


StopFlag = threading.Event | Callable[[], bool] | None


def drag_steps(
    gen: Backend,
    start: StartState,
    handles,
    targets,
    mask=None,
    method: str = "freedrag",
    *,
    max_steps: int | None = None,
    preview_every: int | None = None,
    stop: StopFlag = None,
    **params,
) -> Generator[Step, None, DragResult]:
    """Drag ``handles`` to ``targets`` on ``start``; iterate for steps, return the result.

    ``mask`` (``start.image_size``, 1 = may change) restricts the edit; an empty mask
    means none.  ``params`` override the backend's preset (see ``engine.presets``).
    ``stop`` (an Event or a callable) is checked before every optimiser step.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose 'freedrag' or 'draggan'")
    size = (int(start.image_size[0]), int(start.image_size[1]))
    handles = _check_points("handle", handles, size)
    targets = _check_points("target", targets, size)
    if len(handles) != len(targets):
        raise InputError(
            f"{len(handles)} handle(s) but {len(targets)} target(s); "
            "give one target per handle (pairs are matched by order)"
        )
    mask = _check_mask(mask, size)
    overrides = dict(params)
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if preview_every is not None:
        overrides["preview_every"] = preview_every
    settings = apply_overrides(gen.preset(method, size), overrides)
    return _run(gen, start, handles, targets, mask, method, settings, _stop_check(stop))


def drag(gen: Backend, start: StartState, handles, targets, mask=None, method="freedrag", **kw):
    """Run :func:`drag_steps` to the end and return its :class:`DragResult`."""
    steps = drag_steps(gen, start, handles, targets, mask, method, **kw)
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def _run(gen, start, handles, targets, mask, method, params, should_stop):
    began = time.perf_counter()
    if params.max_steps == 0:
        session = None if start.image is not None else gen.session(start, mask, method)
        image = start.image if session is None else session.render(session.latent.detach())
        return _result(gen, start, start, image, handles, handles, targets, [], params,
                       method, mask, began, converged=False, stopped=False)  # fmt: skip

    session = gen.session(start, mask, method)
    latent = session.latent
    loop_fn = run_freedrag if method == "freedrag" else run_draggan
    loop = loop_fn(session, handles, targets, params, mask is not None)
    trace: list[dict[str, Any]] = []
    last: Progress | None = None
    final: Progress | None = None
    state = image = None
    stopped = False
    try:
        while True:
            if should_stop():
                stopped = True
                break
            try:
                last = next(loop)
            except StopIteration as end:
                final = end.value
                break
            index = len(trace) + 1
            image = None
            if last.final:
                state, image = _finish(session, latent)
            elif params.preview_every and index % params.preview_every == 0:
                image = session.render(latent.detach())
            trace.append({"step": index, "points": last.points.tolist(), "loss": last.loss})
            yield Step(index, last.points, last.loss, last.point_losses, last.decisions,
                       last.done, image, time.perf_counter() - began)  # fmt: skip
            if last.final:  # finished: a stop requested now changes nothing
                final = last
                break
    except Diverged as bad:
        result_state, result_image = _finish(session, bad.latent)
        result = _result(gen, start, result_state, result_image, bad.points, handles, targets,
                         trace[: bad.steps], params, method, mask, began, False, False)  # fmt: skip
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
    end = final or last
    points = end.points if end is not None else handles
    converged = bool(end.done.all()) if end is not None else False
    return _result(gen, start, state, image, points, handles, targets, trace, params, method,
                   mask, began, converged and not stopped, stopped)  # fmt: skip


def _finish(session, latent: torch.Tensor) -> tuple[StartState, np.ndarray]:
    state = session.finish(latent.detach())
    if state.image is None:
        state.image = session.render(latent.detach())
    return state, state.image


def _result(gen, start, state, image, points, handles, targets, trace, params, method, mask,
            began, converged, stopped) -> DragResult:  # fmt: skip
    seconds = time.perf_counter() - began
    steps = len(trace)
    points = np.asarray(points, dtype=np.float64)
    report = {
        "model": start.info.get("model", gen.name),
        "backend": gen.kind,
        "method": method,
        "seed": start.info.get("seed"),
        "image_size": [int(start.image_size[0]), int(start.image_size[1])],
        "handles": handles.tolist(),
        "targets": targets.tolist(),
        "final_points": points.tolist(),
        "mask": mask is not None,
        "steps": steps,
        "converged": converged,
        "stopped": stopped,
        "seconds": seconds,
        "seconds_per_step": seconds / steps if steps else 0.0,
        "device": str(gen.device),
        "parameters": asdict(params),
        "versions": {
            "napari_freedrag": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "start": dict(start.info),
        "trace": trace,
    }
    return DragResult(state, image, points, handles, targets, steps, converged, stopped,
                      seconds, trace, params, report)  # fmt: skip


def _check_points(role: str, points, size: tuple[int, int]) -> np.ndarray:
    """``(N, 2)`` float64 points, clamped from the image's pixel edges onto its pixels."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{role}s must be numbers as (row, col) pairs, got {points!r}") from None
    if array.ndim == 1 and array.size == 2:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 2:
        raise InputError(f"{role}s must be an (N, 2) array of (row, col), got shape {array.shape}")
    if len(array) == 0:
        raise InputError(f"no {role} points given; place at least one handle and one target")
    height, width = size
    for i, (row, col) in enumerate(array):
        if not (np.isfinite(row) and np.isfinite(col)):
            raise InputError(f"{role} {i} is not a finite number: ({row}, {col})")
        if not (-0.5 <= row <= height - 0.5 and -0.5 <= col <= width - 0.5):
            raise InputError(
                f"{role} {i} at (row {row:g}, col {col:g}) is outside the {height}x{width} "
                f"image; points must lie within rows 0..{height - 1} and cols 0..{width - 1}"
            )
    return np.stack([array[:, 0].clip(0, height - 1), array[:, 1].clip(0, width - 1)], axis=1)


def _check_mask(mask, size: tuple[int, int]) -> np.ndarray | None:
    """A float32 mask of the image's shape, or ``None`` when it restricts nothing.

    Boolean and integer masks (napari Labels) count every nonzero pixel as editable;
    floating-point masks are soft weights in 0..1.
    """
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.shape != size:
        raise InputError(
            f"mask shape {array.shape} does not match the image size {size}; "
            "paint the mask on the image being edited"
        )
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        values = (array != 0).astype(np.float32)  # label images: any label = may change
    else:
        try:
            values = array.astype(np.float32)
        except (TypeError, ValueError):
            raise InputError(f"mask must hold numbers, got {array.dtype}") from None
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InputError(
                "a floating-point mask must lie in 0 (keep) .. 1 (may change); "
                f"got values from {values.min():g} to {values.max():g}"
            )
    if not values.any() or (values > 0).all():
        return None  # nothing painted, or everything editable: nothing to preserve
    return values


def _stop_check(stop: StopFlag) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if hasattr(stop, "is_set"):
        return stop.is_set
    if callable(stop):
        return lambda: bool(stop())
    raise InputError("stop must be a threading.Event or a function returning True to stop")
