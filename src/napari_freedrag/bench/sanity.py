"""Drag sanity on the bundled ``cells`` model: do segmented cells go where they are dragged?

For each of N seeds: segment the generated image, put the handle on the centroid of the
largest cell and the target 8-10 px away in a seeded random direction, run FreeDrag with
its preset, segment the result and find the moved cell (the one overlapping most with the
cell's original or target-shifted mask). Progress is the centroid's displacement along
the drag direction divided by the drag distance (1 = it arrived). With ``mask`` the same
drags run again with an editable region around the dragged cell only, and the other
cells' centroid shifts are reported with and without it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from napari_freedrag.cellseg import match, segment, shift_mask


def summary(values) -> dict[str, float]:
    """Count, median, quartiles and range."""
    v = np.asarray(values, dtype=float)
    return {
        "n": int(v.size),
        "median": float(np.median(v)),
        "q25": float(np.quantile(v, 0.25)),
        "q75": float(np.quantile(v, 0.75)),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def pick_instruction(cells, rng, size: int):
    """Handle on the largest cell's centroid, target 8-10 px away inside the image."""
    if not cells:
        return None
    cell = max(cells, key=lambda c: c.area)
    for _ in range(50):
        angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(8.0, 10.0)
        target = cell.centroid + distance * np.array([np.sin(angle), np.cos(angle)])
        if np.all(target >= 4) and np.all(target <= size - 5):
            return cell, target
    return None


def measure(result_image, cell, target, others) -> tuple[float, float, list[float]]:
    """Progress and residual of the dragged cell, centroid shifts of the other cells."""
    found = segment(result_image)
    handle = cell.centroid
    k = match(found, cell.mask | shift_mask(cell.mask, target - handle))
    distance = float(np.linalg.norm(target - handle))
    if k is None:
        progress, residual = 0.0, distance
    else:
        displacement = found[k].centroid - handle
        progress = float(displacement @ (target - handle) / distance**2)
        residual = float(np.linalg.norm(found[k].centroid - target))
    shifts = []
    for other in others:
        j = match(found, other.mask)
        shifts.append(
            float(np.linalg.norm(found[j].centroid - other.centroid)) if j is not None else np.inf
        )
    return progress, residual, shifts


def drag_sanity(gen, count: int = 20, max_steps: int = 300, mask: bool = False, log=print):
    """Run the drags; returns ``(summary report, rows, [(start, result, handle, target)])``."""
    import napari_freedrag as nfd

    size = gen.image_size[0]
    rng = np.random.default_rng(0)
    rows, pairs, seed = [], [], 0
    began = time.perf_counter()
    while len(rows) < count and seed < 10 * count:
        start = gen.sample(seed)
        seed += 1
        cells = segment(start.image)
        picked = pick_instruction(cells, rng, size)
        if picked is None:
            continue
        cell, target = picked
        handle = cell.centroid
        others = [c for c in cells if c is not cell]
        result = nfd.drag(gen, start, [handle], [target], max_steps=max_steps)
        progress, residual, shifts = measure(result.image, cell, target, others)
        pairs.append((start.image, result.image, handle, target))
        row: dict[str, Any] = {
            "seed": seed - 1,
            "handle": handle.round(2).tolist(),
            "target": target.round(2).tolist(),
            "distance": float(np.linalg.norm(target - handle)),
            "progress": progress,
            "residual_px": residual,
            "steps": result.steps,
            "seconds": result.seconds,
            "converged": result.converged,
            "other_shifts_px": shifts,
        }
        if mask and others:
            row.update(_masked(gen, start, cell, target, others, max_steps))
        rows.append(row)
        log(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
    return _report(rows, time.perf_counter() - began), rows, pairs


def _masked(gen, start, cell, target, others, max_steps) -> dict[str, Any]:
    """The same drag with only the dragged cell's surroundings editable."""
    from scipy import ndimage

    import napari_freedrag as nfd

    moved = shift_mask(cell.mask, target - cell.centroid)
    editable = ndimage.binary_dilation(cell.mask | moved, iterations=3)
    others_mask = np.any([o.mask for o in others], axis=0)
    editable &= ~ndimage.binary_dilation(others_mask, iterations=1)
    result = nfd.drag(gen, start, [cell.centroid], [target], mask=editable, max_steps=max_steps)
    progress, _, shifts = measure(result.image, cell, target, others)
    return {"masked_progress": progress, "masked_other_shifts_px": shifts}


def _report(rows: list[dict], wall_seconds: float) -> dict[str, Any]:
    report = {
        "instructions": len(rows),
        "progress": summary([r["progress"] for r in rows]),
        "fraction_progress_at_least_0.5": float(np.mean([r["progress"] >= 0.5 for r in rows])),
        "residual_px": summary([r["residual_px"] for r in rows]),
        "steps": summary([r["steps"] for r in rows]),
        "seconds_per_drag": summary([r["seconds"] for r in rows]),
        "wall_seconds": wall_seconds,
    }
    masked_rows = [r for r in rows if "masked_other_shifts_px" in r]
    unmasked_shifts = [s for r in masked_rows for s in r["other_shifts_px"]]
    if unmasked_shifts:
        masked_shifts = [s for r in masked_rows for s in r["masked_other_shifts_px"]]
        report["other_cells_shift_px_unmasked"] = summary(unmasked_shifts)
        report["other_cells_shift_px_masked"] = summary(masked_shifts)
        report["masked_progress"] = summary([r["masked_progress"] for r in masked_rows])
    return report


def figure(pairs, scale: int = 4) -> np.ndarray:
    """Rows of (start, result) images, upscaled; handle (red) and target (cyan) marked."""
    tiles = []
    for start, result, handle, target in pairs:
        row = []
        for image in (start, result):
            big = np.kron(image, np.ones((scale, scale, 1), dtype=np.uint8))
            for point, colour in ((handle, (255, 40, 40)), (target, (40, 255, 255))):
                r, c = (np.asarray(point) * scale + scale / 2).astype(int)
                big[max(r - 3, 0) : r + 4, max(c - 3, 0) : c + 4] = colour
            row += [big, np.full((big.shape[0], 4, 3), 255, np.uint8)]
        tiles.append(np.concatenate(row[:-1], axis=1))
        tiles.append(np.full((4, tiles[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=0)
