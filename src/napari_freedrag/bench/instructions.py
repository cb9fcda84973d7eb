"""Drag instructions on segmented cells, one planner per category.

Each planner gets an image's cells, a random order of them and the run's random generator,
and returns an :class:`Instruction` (handles, targets, where the cells should end up) or
``None`` when no cell of that image fits the category.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_freedrag.bench.config import CATEGORIES, BenchConfig
from napari_freedrag.cellseg import SegmentedCell, segment, shift_mask
from napari_freedrag.errors import InputError


@dataclass
class Instruction:
    """One drag to run: the cells it moves, their handles and targets (image px), and the
    masks where those cells should be afterwards."""

    category: str
    cells: list[SegmentedCell]
    handles: np.ndarray
    targets: np.ndarray
    expected: list[np.ndarray]
    stretch_px: float | None = None
    seed: int | None = None
    start: Any = None  # the StartState sampled from ``seed``

    def __post_init__(self):
        self.handles = np.asarray(self.handles, dtype=np.float64)
        self.targets = np.asarray(self.targets, dtype=np.float64)


def stretch_mask(cell: SegmentedCell, amount: float) -> np.ndarray:
    """Where the cell would be if stretched by ``amount`` px along its major axis."""
    half = cell.axis * amount / 2
    steps = max(int(np.ceil(amount / 2)), 1)
    out = cell.mask.copy()
    for k in range(1, steps + 1):
        out |= shift_mask(cell.mask, half * k / steps) | shift_mask(cell.mask, -half * k / steps)
    return out


def _inside(mask: np.ndarray, margin: float) -> bool:
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return bool(
        rows.size
        and rows.min() >= margin
        and cols.min() >= margin
        and rows.max() <= height - 1 - margin
        and cols.max() <= width - 1 - margin
    )


def _direction(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    return np.array([np.sin(angle), np.cos(angle)])


def _translation(category, cells, order, rng, config, distance) -> Instruction | None:
    low, high = distance
    for index in order:
        cell = cells[index]
        for _ in range(20):
            delta = _direction(rng) * rng.uniform(low, high)
            expected = shift_mask(cell.mask, delta)
            if _inside(expected, config.edge_margin) and expected.sum() >= 0.9 * cell.area:
                return Instruction(
                    category, [cell], [cell.centroid], [cell.centroid + delta], [expected]
                )
    return None


def plan_move(cells, order, rng, config: BenchConfig) -> Instruction | None:
    """A cell's centroid moved by ``move_distance`` in a random direction."""
    return _translation("move", cells, order, rng, config, config.move_distance)


def plan_large(cells, order, rng, config: BenchConfig) -> Instruction | None:
    """As ``move``, by ``large_distance``."""
    return _translation("large", cells, order, rng, config, config.large_distance)


def plan_border(cells, order, rng, config: BenchConfig) -> Instruction | None:
    """A cell moved towards its nearest image edge until ``border_gap`` px from it."""
    size = cells[0].mask.shape
    for index in order:
        cell = cells[index]
        rows, cols = np.nonzero(cell.mask)
        gaps = {
            (-1, 0): rows.min(),
            (1, 0): size[0] - 1 - rows.max(),
            (0, -1): cols.min(),
            (0, 1): size[1] - 1 - cols.max(),
        }
        direction, gap = min(gaps.items(), key=lambda item: item[1])
        distance = gap - config.border_gap
        if config.move_distance[0] / 2 <= distance <= config.large_distance[1]:
            delta = np.asarray(direction, dtype=np.float64) * distance
            expected = [shift_mask(cell.mask, delta)]
            return Instruction("border", [cell], [cell.centroid], [cell.centroid + delta], expected)
    return None


def plan_stretch(cells, order, rng, config: BenchConfig) -> Instruction | None:
    """Two handles on a cell's major axis pulled apart by ``stretch_amount``."""
    for index in order:
        cell = cells[index]
        amount = rng.uniform(*config.stretch_amount)
        reach = 0.3 * cell.length
        ends = [cell.centroid - reach * cell.axis, cell.centroid + reach * cell.axis]
        goals = [ends[0] - amount / 2 * cell.axis, ends[1] + amount / 2 * cell.axis]
        expected = stretch_mask(cell, amount)
        if _inside(expected, config.edge_margin):
            return Instruction("stretch", [cell], ends, goals, [expected], float(amount))
    return None


def plan_pair(cells, order, rng, config: BenchConfig) -> Instruction | None:
    """The two most alike cells (by area, the hardest to tell apart while tracking), both
    moved by the same vector."""
    if len(cells) < 2:
        return None
    pairs = [
        (abs(a.area - b.area) / max(a.area, b.area), i, j)
        for i, a in enumerate(cells)
        for j, b in enumerate(cells)
        if i < j
    ]
    _, i, j = min(pairs)
    for _ in range(30):
        delta = _direction(rng) * rng.uniform(*config.move_distance)
        expected = [shift_mask(cells[k].mask, delta) for k in (i, j)]
        inside = all(_inside(m, config.edge_margin) for m in expected)
        if inside and not (expected[0] & expected[1]).any():
            handles = [cells[i].centroid, cells[j].centroid]
            targets = [cells[i].centroid + delta, cells[j].centroid + delta]
            return Instruction("pair", [cells[i], cells[j]], handles, targets, expected)
    return None


Planner = Callable[[list[SegmentedCell], np.ndarray, np.random.Generator, BenchConfig], Any]
PLANNERS: dict[str, Planner] = {
    "move": plan_move,
    "stretch": plan_stretch,
    "border": plan_border,
    "pair": plan_pair,
    "large": plan_large,
}


def plan_instruction(category: str, cells, rng, config: BenchConfig) -> Instruction | None:
    """One instruction of ``category`` on an image's cells, or ``None`` if none fits."""
    if category not in PLANNERS:
        raise InputError(f"unknown instruction category {category!r}")
    if not cells:
        return None
    return PLANNERS[category](cells, rng.permutation(len(cells)), rng, config)


def plan_instructions(backend, config: BenchConfig) -> list[Instruction]:
    """Instructions per ``config.counts``, one per image, categories taken in turn."""
    rng = np.random.default_rng(config.seed)
    wanted = {name: count for name, count in config.counts.items() if count > 0}
    planned: list[Instruction] = []
    seed = config.first_image_seed
    while wanted and seed < config.first_image_seed + config.max_image_seeds:
        start = backend.sample(seed, truncation=config.truncation)
        cells = segment(start.image)
        for category in sorted(wanted, key=lambda name: (-wanted[name], CATEGORIES.index(name))):
            inst = plan_instruction(category, cells, rng, config)
            if inst is not None:
                inst.seed, inst.start = seed, start
                planned.append(inst)
                wanted[category] -= 1
                if not wanted[category]:
                    del wanted[category]
                break
        seed += 1
    return planned


def edit_region(inst: Instruction, dilation: int) -> np.ndarray:
    """Pixels the instruction may change: the cells now and where they should end up."""
    from scipy import ndimage

    region = np.any([c.mask for c in inst.cells] + inst.expected, axis=0)
    return ndimage.binary_dilation(region, iterations=dilation) if dilation else region
