"""Labelled data from batches on the ``cells`` model: segmentation before and after each
edit, with the measured displacement of every cell.

:func:`cells_instructions` picks a cell in each seed's image and asks to move it by a known
vector (the benchmark's planner); the instruction carries ``"truth": true``. For such an
edit the worker segments the start and the edited image (the benchmark's segmentation),
matches each cell after the edit to the one before, and the batch writes two label images
with the same id for the same cell (``<out>.labels-before.tif``, ``<out>.labels-after.tif``)
and the per-cell displacements in the report's ``ground_truth`` section.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_freedrag.errors import InputError
from napari_freedrag.io import atomic_path

LABEL_SUFFIXES = {"labels_before": ".labels-before.tif", "labels_after": ".labels-after.tif"}


def cells_instructions(
    count: int,
    first_seed: int = 0,
    *,
    max_steps: int = 80,
    distance: tuple[float, float] = (4.0, 8.0),
    rng_seed: int = 0,
    folder: str = "cells",
    device: str = "auto",
) -> Iterator[dict[str, Any]]:
    """``count`` instructions, one per seed from ``first_seed``: move one cell by a vector
    ``distance`` pixels long, in a random direction that keeps it inside the image."""
    from napari_freedrag.bench.config import BenchConfig
    from napari_freedrag.bench.instructions import plan_instruction
    from napari_freedrag.cellseg import segment
    from napari_freedrag.models.registry import load_generator

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"count must be a positive integer, got {count!r}")
    gen = load_generator("cells", device=device)
    config = BenchConfig(move_distance=tuple(map(float, distance)))
    rng = np.random.default_rng(rng_seed)
    made, seed = 0, first_seed
    while made < count:
        if seed > first_seed + 20 * count + 100:
            raise InputError(f"found only {made} cell images a move fits in; widen distance")
        plan = plan_instruction("move", segment(gen.sample(seed).image), rng, config)
        if plan is not None:
            made += 1
            pairs = zip(plan.handles, plan.targets, strict=True)
            yield {
                "model": "cells",
                "seed": seed,
                "drag": [_pair_text(h, t) for h, t in pairs],
                "max_steps": max_steps,
                "out": f"{folder}/seed{seed:05d}.png",
                "truth": True,
            }
        seed += 1


def write_cells_instructions(path: Path, count: int, **options) -> Path:
    """:func:`cells_instructions` as a JSONL file (written atomically)."""
    path = Path(path)
    lines = [json.dumps(item) for item in cells_instructions(count, **options)]
    with atomic_path(path) as temporary:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _pair_text(handle, target) -> str:
    return f"{handle[0]:.2f},{handle[1]:.2f}:{target[0]:.2f},{target[1]:.2f}"


def measure_truth(start_image: np.ndarray, image: np.ndarray, handles, targets) -> dict:
    """Segment before and after; the same id for the same cell; displacement per cell.

    A dragged cell (the one under a handle) is looked for after the edit where it should
    have gone; the others where they were. Cells that appear only after the edit get new
    ids. ``cell_displacement`` is, per handle, how far its cell's centroid moved.
    """
    from napari_freedrag.cellseg import segment, shift_mask

    before, after = segment(start_image), segment(image)
    handles, targets = np.asarray(handles, float), np.asarray(targets, float)
    dragged: dict[int, np.ndarray] = {}
    for handle, target in zip(handles, targets, strict=True):
        index = _cell_at(before, handle)
        if index is not None and index not in dragged:
            dragged[index] = target - handle
    match: dict[int, int] = {}
    taken: set[int] = set()
    order = list(dragged) + [i for i in range(len(before)) if i not in dragged]
    for index in order:
        cell = before[index]
        where = shift_mask(cell.mask, dragged[index]) if index in dragged else cell.mask
        overlaps = [0 if k in taken else int((c.mask & where).sum()) for k, c in enumerate(after)]
        if overlaps and max(overlaps) > 0:
            match[index] = int(np.argmax(overlaps))
            taken.add(match[index])

    labels_before = np.zeros(start_image.shape[:2], np.uint16)
    labels_after = np.zeros(image.shape[:2], np.uint16)
    cells = []
    for index, cell in enumerate(before):
        labels_before[cell.mask] = index + 1
        found = after[match[index]] if index in match else None
        if found is not None:
            labels_after[found.mask] = index + 1
        cells.append({
            "id": index + 1,
            "centroid_before": cell.centroid.tolist(),
            "centroid_after": None if found is None else found.centroid.tolist(),
            "displacement": None if found is None else (found.centroid - cell.centroid).tolist(),
            "intended_displacement": dragged[index].tolist() if index in dragged else None,
        })  # fmt: skip
    new_id = len(before)
    for k, cell in enumerate(after):
        if k not in taken:
            new_id += 1
            labels_after[cell.mask] = new_id
    per_handle = []
    for handle in handles:
        index = _cell_at(before, handle)
        per_handle.append(None if index is None else cells[index]["displacement"])
    return {
        "labels_before": labels_before,
        "labels_after": labels_after,
        "cells": cells,
        "cell_displacement": per_handle,
    }


def _cell_at(cells, point) -> int | None:
    """The segmented cell under ``point`` (row, col), else the nearest within 3 px."""
    row, col = (int(round(v)) for v in point)
    for index, cell in enumerate(cells):
        if 0 <= row < cell.mask.shape[0] and 0 <= col < cell.mask.shape[1] and cell.mask[row, col]:
            return index
    if not cells:
        return None
    distances = [float(np.linalg.norm(cell.centroid - np.asarray(point))) for cell in cells]
    nearest = int(np.argmin(distances))
    return nearest if distances[nearest] <= 3.0 else None


def label_paths(out: Path) -> dict[str, Path]:
    """Where the label images of the edit written to ``out`` go."""
    return {key: out.with_name(out.stem + suffix) for key, suffix in LABEL_SUFFIXES.items()}
