"""The drag methods' hyper-parameters: their fields, allowed ranges and meanings, and the
validation of user overrides.

The values themselves are each backend's business (``Backend.preset``): the engine never
learns which model it drives.  docs/algorithm.md gives the published values.
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import InputError

UNITS = ("image", "feature")
#: How a distance is compared with its threshold, written as the comparison itself.
STOP_COMPARISONS = ("<=", "<")
SUPERVISE_COMPARISONS = (">", ">=")
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _num(lo: float, hi: float, doc: str, integer: bool = False) -> dict[str, Any]:
    return {"range": (lo, hi), "integer": integer, "doc": doc}


def _choice(choices: tuple[Any, ...], doc: str) -> dict[str, Any]:
    return {"choices": choices, "doc": doc}


# Fields both methods have, so their default, range and meaning live once.
def _snap_to_feature_grid():
    return field(
        default=False,
        metadata=_choice((False, True), "round handles/targets to whole feature pixels"),
    )


def _max_steps():
    return field(default=300, metadata=_num(0, 100_000, "optimiser steps", True))


def _preview_every():
    return field(
        default=5, metadata=_num(0, 100_000, "render every N steps (0: only the last)", True)
    )


@dataclass(frozen=True)
class FreeDragParams:
    """FreeDrag settings (docs/algorithm.md §2-§6). Distances ``d`` are in feature pixels."""

    l: float = field(metadata=_num(1e-6, 100.0, "expected patch discrepancy per sub-motion"))  # noqa: E741
    d: float = field(metadata=_num(0.1, 64.0, "max distance per sub-motion (feature px)"))
    lr: float = field(metadata=_num(1e-6, 1.0, "Adam learning rate"))
    inner_steps: int = field(
        default=5, metadata=_num(1, 100, "max Adam steps per sub-motion", True)
    )
    exit_fraction: float = field(
        default=0.25, metadata=_num(0.0, 10.0, "inner loop exits when max loss < this * l")
    )
    done_fraction: float = field(
        default=0.25, metadata=_num(0.0, 10.0, "a point is done when L_end <= this * l")
    )
    arrive_distance: float = field(
        default=1.0, metadata=_num(0.0, 1000.0, "a point is done within this distance")
    )
    arrive_units: str = field(default="image", metadata=_choice(UNITS, "unit of arrive_distance"))
    patch_grid: int = field(
        default=3, metadata=_num(1, 31, "patch samples per axis (grid x grid)", True)
    )
    patch_radius: float = field(
        default=3.0, metadata=_num(0.0, 64.0, "patch half-width (see patch_units)")
    )
    patch_units: str = field(default="image", metadata=_choice(UNITS, "unit of patch_radius"))
    mask_weight: float = field(
        default=10.0, metadata=_num(0.0, 1e6, "weight of the mask term (gamma)")
    )
    snap_to_feature_grid: bool = _snap_to_feature_grid()
    max_steps: int = _max_steps()
    preview_every: int = _preview_every()


@dataclass(frozen=True)
class DragGANParams:
    """DragGAN settings (docs/algorithm.md §7); DragDiffusion's when ``units == "feature"``.

    ``units`` says where points and radii live: ``"image"`` uses the feature map
    bilinearly upsampled to image size (DragGAN), ``"feature"`` the feature map itself
    (DragDiffusion).  The two methods compare distances differently: DragGAN stops when
    every handle is ``<=`` ``stop_distance`` and supervises only points ``>`` 1 away;
    DragDiffusion stops only when every handle is ``<`` 2 and supervises points ``>=`` 2.
    """

    lr: float = field(metadata=_num(1e-6, 1.0, "Adam learning rate"))
    motion_radius: float = field(metadata=_num(0.0, 64.0, "motion supervision radius r1"))
    track_radius: float = field(metadata=_num(0.0, 128.0, "point tracking half-size r2"))
    stop_distance: float = field(metadata=_num(0.0, 1000.0, "done when every point is this close"))
    units: str = field(default="image", metadata=_choice(UNITS, "unit of points and radii"))
    motion_shape: str = field(
        default="circle", metadata=_choice(("circle", "square"), "motion supervision region")
    )
    motion_reduction: str = field(
        default="mean",
        metadata=_choice(("mean", "sum"), "per point: mean L1, or sum over pixels of it"),
    )
    stop_comparison: str = field(
        default="<=",
        metadata=_choice(
            STOP_COMPARISONS, "done when every distance <= (DragGAN) or < (DragDiffusion) stop"
        ),
    )
    supervise_distance: float = field(
        default=1.0, metadata=_num(0.0, 1000.0, "motion supervision only beyond this distance")
    )
    supervise_comparison: str = field(
        default=">",
        metadata=_choice(
            SUPERVISE_COMPARISONS,
            "supervised when distance > (DragGAN) or >= (DragDiffusion) supervise_distance",
        ),
    )
    track_metric: str = field(
        default="l2", metadata=_choice(("l1", "l2"), "nearest-neighbour distance")
    )
    mask_weight: float = field(default=20.0, metadata=_num(0.0, 1e6, "weight of the mask term"))
    snap_to_feature_grid: bool = _snap_to_feature_grid()
    max_steps: int = _max_steps()
    preview_every: int = _preview_every()


Params = FreeDragParams | DragGANParams
PARAMS_BY_METHOD: dict[str, type[FreeDragParams] | type[DragGANParams]] = {
    "freedrag": FreeDragParams,
    "draggan": DragGANParams,
}


def describe(params: Params) -> dict[str, Any]:
    """Every parameter with its value, allowed range and meaning (for docs and UIs)."""
    return {f.name: {"value": getattr(params, f.name), **f.metadata} for f in fields(params)}


def apply_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """A copy of ``params`` with ``overrides`` applied; bad names or values raise InputError."""
    if not overrides:
        return params
    return replace(params, **check_overrides(type(params), overrides))


def check_overrides(kind: type[Params], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` checked against ``kind``'s fields: known names, right types, in range."""
    known = {f.name: f for f in fields(kind)}
    checked: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in known:
            raise InputError(
                f"unknown parameter {name!r} for {kind.__name__}; "
                f"allowed: {', '.join(sorted(known))}"
            )
        checked[name] = _check(name, value, known[name].metadata)
    return checked


def _check(name: str, value: Any, meta: dict[str, Any]) -> Any:
    if "choices" in meta:
        choices = meta["choices"]
        if isinstance(value, bool) != isinstance(choices[0], bool) or value not in choices:
            allowed = " or ".join(repr(c) for c in choices)
            raise InputError(f"parameter {name!r} must be {allowed}, got {value!r}")
        return value
    lo, hi = meta["range"]
    kind = "an integer" if meta["integer"] else "a number"
    wrong = isinstance(value, bool) or not isinstance(value, numbers.Real)
    if wrong or not math.isfinite(value) or not lo <= value <= hi:
        raise InputError(f"parameter {name!r} must be {kind} in [{lo}, {hi}], got {value!r}")
    if meta["integer"]:
        if value != int(value):
            raise InputError(
                f"parameter {name!r} must be an integer in [{lo}, {hi}], got {value!r}"
            )
        return int(value)
    return float(value)
