"""Drag sanity on the bundled ``cells`` model: do segmented cells go where they are dragged?

For each of N seeds: segment the generated image (scikit-image), put the handle on the
centroid of the largest cell and the target 8-10 px away in a seeded random direction,
run FreeDrag with the spec preset, segment the result and find the moved cell (the region
overlapping most with the cell's original or target-shifted mask). Progress is the
centroid's displacement along the drag direction divided by the drag distance (1 = it
arrived). With ``--mask`` the same drags run again with an editable region around the
dragged cell only, and the other cells' centroid shifts are reported with and without it.

    OMP_NUM_THREADS=1 python benchmarks/cells_drag_sanity.py --count 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import napari_freedrag as nfd
from napari_freedrag.cellseg import segment_cells


def regions_and_labels(image):
    regions = segment_cells(image)
    labels = np.zeros(image.shape[:2], dtype=int)
    for i, region in enumerate(regions, start=1):
        labels[tuple(region.coords.T)] = i
    return regions, labels


def match_region(labels, regions, reference_mask):
    """The region overlapping ``reference_mask`` most, or None if nothing overlaps."""
    overlap = np.bincount(labels[reference_mask], minlength=len(regions) + 1)[1:]
    return regions[int(overlap.argmax())] if overlap.size and overlap.max() > 0 else None


def pick_instruction(image, rng, size):
    """Handle on the largest cell's centroid, target 8-10 px away inside the image."""
    regions, labels = regions_and_labels(image)
    if not regions:
        return None
    cell = max(regions, key=lambda r: r.area)
    handle = np.asarray(cell.centroid)
    for _ in range(50):
        angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(8.0, 10.0)
        target = handle + distance * np.array([np.sin(angle), np.cos(angle)])
        if np.all(target >= 4) and np.all(target <= size - 5):
            return regions, labels, cell, handle, target
    return None


def shifted(mask, offset):
    return ndimage.shift(mask.astype(float), offset, order=0) > 0.5


def measure(result_image, cell_mask, handle, target, others):
    """Progress of the dragged cell and centroid shifts of the other cells."""
    regions, labels = regions_and_labels(result_image)
    moved = match_region(labels, regions, cell_mask | shifted(cell_mask, target - handle))
    direction = (target - handle) / np.linalg.norm(target - handle)
    if moved is None:
        progress, residual = 0.0, float(np.linalg.norm(target - handle))
    else:
        displacement = np.asarray(moved.centroid) - handle
        progress = float(displacement @ direction / np.linalg.norm(target - handle))
        residual = float(np.linalg.norm(np.asarray(moved.centroid) - target))
    other_shifts = []
    for other in others:
        found = match_region(labels, regions, other["mask"])
        other_shifts.append(
            float(np.linalg.norm(np.asarray(found.centroid) - other["centroid"]))
            if found is not None else float("inf")
        )
    return progress, residual, other_shifts


def figure(pairs, scale=4):
    """Rows of (start, result) images, upscaled; handle (red) and target (cyan) marked."""
    tiles = []
    for start, result, handle, target in pairs:
        row = []
        for image in (start, result):
            big = np.kron(image, np.ones((scale, scale, 1), dtype=np.uint8))
            for point, colour in ((handle, (255, 40, 40)), (target, (40, 255, 255))):
                r, c = (np.asarray(point) * scale + scale / 2).astype(int)
                big[max(r - 3, 0):r + 4, max(c - 3, 0):c + 4] = colour
            row += [big, np.full((big.shape[0], 4, 3), 255, np.uint8)]
        tiles.append(np.concatenate(row[:-1], axis=1))
        tiles.append(np.full((4, tiles[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=0)


def summary(values):
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "median": float(np.median(v)), "q25": float(np.quantile(v, 0.25)),
            "q75": float(np.quantile(v, 0.75)), "min": float(v.min()), "max": float(v.max())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cells", help="MODEL string for load_generator")
    parser.add_argument("--count", type=int, default=20, help="number of drag instructions")
    parser.add_argument("--mask", action="store_true", help="also run the masked drags")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None,
                        help="PNG of the first 4 drags: start | result, handle red, target cyan")
    args = parser.parse_args(argv)

    gen = nfd.load_generator(args.model, device="cpu")
    size = gen.image_size[0]
    rng = np.random.default_rng(0)
    rows, seed, pairs = [], 0, []
    began = time.perf_counter()
    while len(rows) < args.count and seed < 10 * args.count:
        start = gen.sample(seed)
        seed += 1
        picked = pick_instruction(start.image, rng, size)
        if picked is None:
            continue
        regions, labels, cell, handle, target = picked
        cell_mask = labels == regions.index(cell) + 1
        others = [{"mask": labels == i + 1, "centroid": np.asarray(r.centroid)}
                  for i, r in enumerate(regions) if r is not cell]
        result = nfd.drag(gen, start, [handle], [target], max_steps=args.max_steps)
        progress, residual, shifts = measure(result.image, cell_mask, handle, target, others)
        pairs.append((start.image, result.image, handle, target))
        row = {"seed": seed - 1, "handle": handle.round(2).tolist(),
               "target": target.round(2).tolist(),
               "distance": float(np.linalg.norm(target - handle)),
               "progress": progress, "residual_px": residual, "steps": result.steps,
               "seconds": result.seconds, "converged": result.converged,
               "other_shifts_px": shifts}
        if args.mask and others:
            editable = ndimage.binary_dilation(cell_mask | shifted(cell_mask, target - handle),
                                               iterations=3)
            editable &= ~ndimage.binary_dilation(np.any([o["mask"] for o in others], axis=0),
                                                 iterations=1)
            masked = nfd.drag(gen, start, [handle], [target], mask=editable,
                              max_steps=args.max_steps)
            m_progress, _, m_shifts = measure(masked.image, cell_mask, handle, target, others)
            row.update(masked_progress=m_progress, masked_other_shifts_px=m_shifts)
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                          for k, v in row.items()}), flush=True)

    report = {
        "instructions": len(rows),
        "progress": summary([r["progress"] for r in rows]),
        "fraction_progress_at_least_0.5": float(np.mean([r["progress"] >= 0.5 for r in rows])),
        "residual_px": summary([r["residual_px"] for r in rows]),
        "steps": summary([r["steps"] for r in rows]),
        "seconds_per_drag": summary([r["seconds"] for r in rows]),
        "wall_seconds": time.perf_counter() - began,
    }
    masked_rows = [r for r in rows if "masked_other_shifts_px" in r]
    unmasked_shifts = [s for r in masked_rows for s in r["other_shifts_px"]]
    if unmasked_shifts:
        masked_shifts = [s for r in masked_rows for s in r["masked_other_shifts_px"]]
        report["other_cells_shift_px_unmasked"] = summary(unmasked_shifts)
        report["other_cells_shift_px_masked"] = summary(masked_shifts)
        report["masked_progress"] = summary([r["masked_progress"] for r in masked_rows])
    print(json.dumps(report, indent=1))
    if args.figure:
        from skimage.io import imsave

        imsave(args.figure, figure(pairs[:4]), check_contrast=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": report, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
