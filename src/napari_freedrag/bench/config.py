"""What a benchmark run depends on: categories, variants, feature modes and the two
standard configurations (``--quick`` for CI, the full run the docs report)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from napari_freedrag.testing import STANDARD

#: Ways of computing the drag features, compared for speed (all give the same numbers
#: where the engine reads them, so both methods follow the same trajectory in each).
MODES = ("receptive", "feature-map", "full-synthesis")
MODE_DOCS = {
    "receptive": "as shipped: layers above the feature block never run; high-resolution "
    "layers compute only the receptive field of the patches the engine reads",
    "feature-map": "partial synthesis: the whole feature map up to the feature block",
    "full-synthesis": "every step also synthesises the rest of the image, as the reference "
    "implementations do",
}
#: Instruction categories, in the order they are planned when counts tie.
CATEGORIES = ("move", "stretch", "border", "pair", "large")
#: What runs on each accuracy instruction: a method, parameter overrides, and whether
#: FreeDrag's ``l`` is calibrated on the start image (see ``accuracy.calibrated_l``).
VARIANTS: dict[str, dict[str, Any]] = {
    "freedrag": {"method": "freedrag"},
    "draggan": {"method": "draggan"},
}
#: FreeDrag with ``l`` measured on the model instead of the preset's fixed value.
CALIBRATED = {"freedrag-calibrated-l": {"method": "freedrag", "calibrate_l": True}}
#: The standard StyleGAN2 configuration (FFHQ-style), random weights.
STANDARD_GENERATOR = STANDARD


@dataclass
class BenchConfig:
    """Everything a run depends on; recorded verbatim in the JSON.

    Distances are image pixels.  ``counts`` is instructions per category.  Each speed
    generator is a dict: ``{"name", "model"}`` for a MODEL string or ``{"name",
    "resolution", ...STANDARD_GENERATOR}`` for a random-weight one, plus ``max_steps``
    (cap of the time-to-target run in ``receptive`` mode) and ``mode_steps`` (cap in the
    other modes).
    """

    name: str = "custom"
    model: str = "cells"
    device: str = "auto"
    seed: int = 0
    first_image_seed: int = 0
    max_image_seeds: int = 400
    truncation: float = 0.7
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 1))
    move_distance: tuple[float, float] = (6.0, 10.0)
    large_distance: tuple[float, float] = (14.0, 18.0)
    stretch_amount: tuple[float, float] = (6.0, 9.0)
    border_gap: float = 3.0
    edge_margin: float = 2.0
    success_px: float = 2.0
    region_dilation: int = 3
    max_steps: int = 300
    reverse: bool = True
    masked_categories: tuple[str, ...] = ()
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(VARIANTS))
    examples: int = 4
    speed_generators: list[dict[str, Any]] = field(default_factory=list)
    speed_modes: tuple[str, ...] = MODES
    speed_drag_fraction: float = 0.125
    speed_devices: tuple[str, ...] = ("cpu",)
    isolate: bool = True


def _random_generator(resolution: int, max_steps: int, mode_steps: int) -> dict[str, Any]:
    """A speed generator with the standard StyleGAN2 layout and random weights."""
    return {
        "name": f"random-{resolution}",
        "resolution": resolution,
        **STANDARD_GENERATOR,
        "max_steps": max_steps,
        "mode_steps": mode_steps,
    }


def quick_config(model: str = "cells") -> BenchConfig:
    """CI-sized: a few instructions, short caps, random generator at 256 px only."""
    return BenchConfig(
        name="quick",
        model=model,
        counts={"move": 3, "stretch": 2, "border": 1, "pair": 1, "large": 1},
        variants={**VARIANTS, **CALIBRATED},
        max_steps=80,
        examples=2,
        speed_generators=[
            {"name": model, "model": model, "max_steps": 80, "mode_steps": 20},
            _random_generator(256, max_steps=30, mode_steps=3),
        ],
        speed_devices=devices(),
    )


def full_config(model: str = "cells") -> BenchConfig:
    """The run docs/benchmarks.md reports (about 35 minutes on 2 shared CPU cores)."""
    return BenchConfig(
        name="full",
        model=model,
        counts={"move": 12, "stretch": 6, "border": 5, "pair": 5, "large": 5},
        variants={**VARIANTS, **CALIBRATED},
        masked_categories=("move",),
        speed_generators=[
            {"name": model, "model": model, "max_steps": 300, "mode_steps": 300},
            _random_generator(256, max_steps=300, mode_steps=6),
            _random_generator(512, max_steps=300, mode_steps=5),
        ],
        speed_devices=devices(),
    )


def devices() -> tuple[str, ...]:
    """The devices speed runs cover on this machine."""
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
