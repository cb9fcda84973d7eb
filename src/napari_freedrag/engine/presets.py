"""Hyper-parameter presets per backend kind, and validation of user overrides.

Every constant comes from ``spec/algorithm.md`` (§6 for FreeDrag, §7/§7b for DragGAN and
DragDiffusion).  The ``"analytic"`` presets suit the analytic test renderer
(:mod:`napari_freedrag.models.analytic`): its latent moves blobs about 0.5 image pixels
per Adam step, so the learning rates are larger than StyleGAN2's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import InputError
from .protocol import METHODS

KINDS = ("stylegan2", "ldm", "analytic")
UNITS = ("image", "feature")

#: Categories whose StyleGAN2 models need a larger patch discrepancy (FreeDrag's own
#: settings for large animals).
LARGE_ANIMALS = frozenset(
    {"elephant", "elephants", "lion", "lions", "dog", "dogs", "giraffe", "giraffes"}
)


def _num(lo: float, hi: float, doc: str, integer: bool = False) -> dict[str, Any]:
    return {"range": (lo, hi), "integer": integer, "doc": doc}


def _choice(choices: tuple[Any, ...], doc: str) -> dict[str, Any]:
    return {"choices": choices, "doc": doc}


@dataclass(frozen=True)
class FreeDragParams:
    """FreeDrag settings (spec §2-§6). Distances ``d`` are in feature-map pixels."""

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
    snap_to_feature_grid: bool = field(
        default=False,
        metadata=_choice((False, True), "round handles/targets to whole feature pixels"),
    )
    max_steps: int = field(default=300, metadata=_num(0, 100_000, "optimiser steps", True))
    preview_every: int = field(
        default=5, metadata=_num(0, 100_000, "render every N steps (0: only the last)", True)
    )


@dataclass(frozen=True)
class DragGANParams:
    """DragGAN settings (spec §7); DragDiffusion's when ``units == "feature"`` (§7b).

    ``units`` says where points and radii live: ``"image"`` uses the feature map
    bilinearly upsampled to image size (DragGAN), ``"feature"`` the feature map itself
    (DragDiffusion).
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
    motion_skip_distance: float = field(
        default=1.0, metadata=_num(0.0, 1000.0, "points this close get no motion supervision")
    )
    track_metric: str = field(
        default="l2", metadata=_choice(("l1", "l2"), "nearest-neighbour distance")
    )
    mask_weight: float = field(default=20.0, metadata=_num(0.0, 1e6, "weight of the mask term"))
    snap_to_feature_grid: bool = field(
        default=False,
        metadata=_choice((False, True), "round handles/targets to whole feature pixels"),
    )
    max_steps: int = field(default=300, metadata=_num(0, 100_000, "optimiser steps", True))
    preview_every: int = field(
        default=5, metadata=_num(0, 100_000, "render every N steps (0: only the last)", True)
    )


Params = FreeDragParams | DragGANParams


def default_params(
    kind: str, method: str, image_size: tuple[int, int], category: str | None = None
) -> Params:
    """The spec's preset for a backend ``kind`` and ``method`` at ``image_size`` (H, W)."""
    if kind not in KINDS:
        raise InputError(f"unknown backend kind {kind!r}; expected one of {', '.join(KINDS)}")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose 'freedrag' or 'draggan'")
    height = int(image_size[0])
    if method == "freedrag":
        if kind == "ldm":
            return FreeDragParams(
                l=1.0, d=5.0, lr=0.01, exit_fraction=0.5, done_fraction=0.5,
                arrive_distance=2.0, arrive_units="feature", patch_grid=9,
                patch_radius=4.0, patch_units="feature", snap_to_feature_grid=True,
                preview_every=0,
            )  # fmt: skip
        if kind == "analytic":
            return FreeDragParams(l=0.3, d=2.0, lr=0.01, max_steps=200)
        large = category is not None and category.lower() in LARGE_ANIMALS
        return FreeDragParams(l=0.4 if large else 0.3, d=4.0 if large else 3.0, lr=0.002)
    if kind == "ldm":
        return DragGANParams(
            lr=0.01, motion_radius=1.0, track_radius=3.0, stop_distance=2.0, units="feature",
            motion_shape="square", motion_reduction="sum", motion_skip_distance=2.0,
            track_metric="l1", mask_weight=0.1, snap_to_feature_grid=True, max_steps=80,
            preview_every=0,
        )  # fmt: skip
    if kind == "analytic":
        return DragGANParams(
            lr=0.005, motion_radius=2.0, track_radius=4.0, stop_distance=2.0, max_steps=200
        )
    return DragGANParams(
        lr=0.001,
        motion_radius=float(round(3 * height / 512)),
        track_radius=float(round(12 * height / 512)),
        stop_distance=max(2.0, 2 * height / 512),
    )


def describe(params: Params) -> dict[str, Any]:
    """Every parameter with its value, allowed range and meaning (for docs and UIs)."""
    return {f.name: {"value": getattr(params, f.name), **f.metadata} for f in fields(params)}


def apply_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """A copy of ``params`` with ``overrides`` applied; bad names or values raise InputError."""
    if not overrides:
        return params
    known = {f.name: f for f in fields(params)}
    changes: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in known:
            raise InputError(
                f"unknown parameter {name!r} for {type(params).__name__}; "
                f"allowed: {', '.join(sorted(known))}"
            )
        changes[name] = _check(name, value, known[name].metadata)
    return replace(params, **changes)


def _check(name: str, value: Any, meta: dict[str, Any]) -> Any:
    if "choices" in meta:
        choices = meta["choices"]
        if isinstance(value, bool) != isinstance(choices[0], bool) or value not in choices:
            allowed = " or ".join(repr(c) for c in choices)
            raise InputError(f"parameter {name!r} must be {allowed}, got {value!r}")
        return value
    lo, hi = meta["range"]
    kind = "an integer" if meta["integer"] else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InputError(
                f"parameter {name!r} must be {kind} in [{lo}, {hi}], got {value!r}"
            ) from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InputError(f"parameter {name!r} must be {kind} in [{lo}, {hi}], got {value!r}")
    if meta["integer"]:
        if value != int(value):
            raise InputError(
                f"parameter {name!r} must be an integer in [{lo}, {hi}], got {value!r}"
            )
        return int(value)
    return float(value)
