"""The one check of a drag instruction: points, mask, method, parameters, model and start.

Every face (CLI, widget, console API, benchmark) gets the same rule and the same message
for each mistake.  :func:`check_instruction` needs no model, so a face can call it before
loading anything heavy; :func:`validate` is what a :class:`~.run.DragRun` is built from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .presets import PARAMS_BY_METHOD, Params, check_overrides
from .protocol import METHODS, Backend, StartState
from .targets import TargetSource


@dataclass(frozen=True)
class Instruction:
    """A checked drag: everything a run needs, nothing left to validate."""

    gen: Backend
    start: StartState
    handles: np.ndarray
    targets: TargetSource
    target_version: int
    mask: np.ndarray | None
    method: str
    settings: Params


def check_method(method: Any) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose 'freedrag' or 'draggan'")
    return method


def check_size(image_size: Any) -> tuple[int, int]:
    """``(H, W)`` as two positive integers."""
    try:
        height, width = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise InputError(f"image size must be (height, width), got {image_size!r}") from None
    if height < 1 or width < 1:
        raise InputError(f"image size must be positive, got {image_size!r}")
    return height, width


def check_points(role: str, points: Any, size: tuple[int, int]) -> np.ndarray:
    """``(N, 2)`` float64 points inside the drawn image, clamped onto its pixel centres.

    A point is inside when it lies on the image as drawn: row in ``[-0.5, H - 0.5]``,
    col in ``[-0.5, W - 0.5]`` (each pixel covers one unit around its centre).
    """
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    if isinstance(points, str | bytes):
        raise InputError(f"{role}s must be numbers as (row, col) pairs, got {points!r}")
    try:
        raw = np.asarray(points)
    except (TypeError, ValueError):
        raise InputError(f"{role}s must be numbers as (row, col) pairs, got {points!r}") from None
    if raw.size and raw.dtype.kind not in "iuf":
        raise InputError(f"{role}s must be numbers as (row, col) pairs, got {points!r}")
    array = raw.astype(np.float64)
    if array.ndim == 1 and array.size == 2:
        array = array[None, :]
    if array.size == 0:
        raise InputError(f"no {role} points given; place at least one handle and one target")
    if array.ndim != 2 or array.shape[1] != 2:
        raise InputError(f"{role}s must be an (N, 2) array of (row, col), got shape {array.shape}")
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


def check_pairs(handles: Any, targets: Any, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Handles and targets checked, one target per handle (matched by order)."""
    handles = check_points("handle", handles, size)
    targets = check_points("target", targets, size)
    _check_count(len(handles), len(targets))
    return handles, targets


def _check_count(handles: int, targets: int) -> None:
    if handles != targets:
        raise InputError(
            f"{handles} handle(s) but {targets} target(s); "
            "give one target per handle (pairs are matched by order)"
        )


def check_mask_shape(mask: Any, size: tuple[int, int]) -> np.ndarray:
    """``mask`` as an array, refused unless it has the image's shape (engine and backends)."""
    array = np.asarray(mask)
    if array.shape != tuple(size):
        raise InputError(
            f"mask shape {array.shape} does not match the image size {tuple(size)}; "
            "paint the mask on the image being edited"
        )
    return array


def check_mask(mask: Any, size: tuple[int, int]) -> np.ndarray | None:
    """A float32 mask of the image's shape, or ``None`` when it restricts nothing.

    Boolean and integer masks (napari Labels) count every nonzero pixel as editable;
    floating-point masks are soft weights in 0..1.
    """
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    array = check_mask_shape(mask, size)
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        values = (array != 0).astype(np.float32)  # label images: any label = may change
    else:
        if array.dtype.kind != "f":
            raise InputError(f"mask must hold numbers, got {array.dtype}")
        values = array.astype(np.float32)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InputError(
                "a floating-point mask must lie in 0 (keep) .. 1 (may change); "
                f"got values from {values.min():g} to {values.max():g}"
            )
    if not values.any() or (values > 0).all():
        return None  # nothing painted, or everything editable: nothing to preserve
    return values


def _check_settings(
    method: str,
    size: tuple[int, int],
    mask: Any,
    *,
    max_steps: int | None = None,
    preview_every: int | None = None,
    **params,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The mask and the preset overrides checked: the one home of the run's option keywords."""
    mask = check_mask(mask, size)
    overrides = dict(params)
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if preview_every is not None:
        overrides["preview_every"] = preview_every
    return mask, check_overrides(PARAMS_BY_METHOD[method], overrides)


def check_instruction(
    image_size, handles, targets, mask=None, method: str = "freedrag", **options
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Everything that needs no model: ``(handles, targets, mask, overrides)`` checked.

    ``options`` are those of :func:`validate` (``max_steps``, ``preview_every``, preset fields).
    """
    method = check_method(method)
    size = check_size(image_size)
    handles, targets = check_pairs(handles, targets, size)
    mask, overrides = _check_settings(method, size, mask, **options)
    return handles, targets, mask, overrides


def check_backend(gen: Any) -> Backend:
    if isinstance(gen, str) or not isinstance(gen, Backend):
        raise InputError(
            f"gen must be a loaded model (from napari_freedrag.load_generator), got {gen!r}"
        )
    return gen


def check_start(gen: Backend, start: Any) -> StartState:
    """A start state this model can continue from."""
    if not isinstance(start, StartState):
        raise InputError(
            f"start must be a StartState (from gen.sample(seed), or a source image), got {start!r}"
        )
    made_by = start.info.get("model") if isinstance(start.info, dict) else None
    if made_by is not None and made_by != gen.name:
        raise InputError(
            f"this start state was made with {made_by!r}, not {gen.name!r}: "
            "start again from this model (sample a seed or load the image)"
        )
    return start


def validate(
    gen, start, handles, targets, mask=None, method: str = "freedrag", **options
) -> Instruction:
    """The whole instruction checked against ``gen`` and ``start``, the preset resolved once.

    ``targets`` may be a :class:`TargetSource` (live re-targeting) or plain points;
    ``options`` are ``max_steps``, ``preview_every`` and preset fields (``engine.presets``).
    """
    gen = check_backend(gen)
    start = check_start(gen, start)
    method = check_method(method)
    size = check_size(start.image_size)
    handles = check_points("handle", handles, size)

    def check_targets(value) -> np.ndarray:
        checked = check_points("target", value, size)
        _check_count(len(handles), len(checked))
        return checked

    source = targets if isinstance(targets, TargetSource) else TargetSource(targets)
    version, _ = source.bind(check_targets)
    mask, overrides = _check_settings(method, size, mask, **options)
    settings = replace(gen.preset(method, size), **overrides)
    return Instruction(gen, start, handles, source, version, mask, method, settings)
