"""Where a cells generator's eccentricity SMD comes from: cell size, merged cells, axes.

The quality table pools every segmented region, so two errors can cancel: merged cells
(long, non-convex regions) raise the mean eccentricity while ordinary cells drawn too
round lower it. This splits the regions of generated and dataset images by area, counts
the non-convex ones (solidity < 0.9) and gives the axis lengths of the convex ones, and
their median width (and their nucleus's) by length (in the dataset the width grows with
the length) and their median axis ratio by area.

    OMP_NUM_THREADS=1 python benchmarks/cells_shape_breakdown.py \\
        src/napari_freedrag/models/cells/weights/cells.safetensors --json shape.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops

from napari_freedrag.cellseg import segment_cells
from napari_freedrag.errors import InputError
from napari_freedrag.io import write_report
from napari_freedrag.models.stylegan2.checkpoint import build_generator, load_checkpoint
from napari_freedrag.training.cells.dataset import make_images
from napari_freedrag.training.cells.quality import DATASET_SEED, GENERATED_SEED, generate_images
from napari_freedrag.training.cells.state import trained_min_semi_minor

AREA_BINS = (0, 150, 250, 350, None)
MAJOR_AXIS_BINS = (0, 16, 20, 24, 28, None)
CONVEX_SOLIDITY = 0.9


def _binned(values, edges, measured, statistic, names) -> list[dict]:
    """Per bin of ``values`` (``edges``, the last one open): its bounds, how many fall in it
    and ``statistic`` of ``measured`` over them (``None`` for an empty bin)."""
    bounds_key, count_key, statistic_key = names
    rows = []
    for low, high in zip(edges, edges[1:], strict=False):
        inside = (values >= low) & (values < (np.inf if high is None else high))
        rows.append(
            {
                bounds_key: [low, high],
                count_key: int(inside.sum()),
                statistic_key: float(statistic(measured[inside])) if inside.any() else None,
            }
        )
    return rows


def nucleus_minor_axis(image: np.ndarray, region) -> float:
    """Width of the brightest blue blob inside a cell (Otsu within the cell), NaN if none:
    tells whether a cell drawn too wide has a wide nucleus or a wide cytoplasm."""
    rows, cols = region.slice
    blue = image[rows, cols, 2].astype(float)[region.image]
    if np.ptp(blue) < 10:
        return float("nan")
    nucleus = np.zeros(region.image.shape, dtype=bool)
    nucleus[region.image] = blue > threshold_otsu(blue)
    blobs = regionprops(label(nucleus))
    return max(blobs, key=lambda b: b.area).axis_minor_length if blobs else float("nan")


def breakdown(images: np.ndarray) -> dict:
    pairs = [(image, region) for image in images for region in segment_cells(image)]
    regions = [region for _, region in pairs]
    area = np.array([r.area for r in regions], dtype=float)
    eccentricity = np.array([r.eccentricity for r in regions])
    convex = np.array([r.solidity for r in regions]) >= CONVEX_SOLIDITY
    major = np.array([r.axis_major_length for r in regions])[convex]
    minor = np.array([r.axis_minor_length for r in regions])[convex]
    nucleus = np.array(
        [nucleus_minor_axis(i, r) for (i, r), c in zip(pairs, convex, strict=True) if c]
    )
    bins = _binned(
        area, AREA_BINS, eccentricity, np.mean, ("area_px", "regions", "mean_eccentricity")
    )
    by_major = _binned(
        major, MAJOR_AXIS_BINS, minor, np.median, ("major_axis_px", "cells", "median_minor_axis_px")
    )
    nucleus_by_major = _binned(
        major, MAJOR_AXIS_BINS, nucleus, np.nanmedian, ("major_axis_px", "cells", "median_px")
    )
    ratio_by_area = _binned(
        area[convex], AREA_BINS, major / minor, np.median, ("area_px", "cells", "median_ratio")
    )
    quartiles = (25, 50, 75)
    return {
        "regions": len(regions),
        "by_area": bins,
        "non_convex_regions": int((~convex).sum()),
        "convex_major_axis_px_quartiles": np.percentile(major, quartiles).tolist(),
        "convex_minor_axis_px_quartiles": np.percentile(minor, quartiles).tolist(),
        "convex_axis_ratio_quartiles": np.percentile(major / minor, quartiles).tolist(),
        "convex_minor_axis_by_major_axis": by_major,
        "convex_nucleus_minor_axis_by_major_axis": nucleus_by_major,
        "convex_axis_ratio_by_area": ratio_by_area,
    }


def _line(name: str, row: dict) -> str:
    bins = " | ".join(
        f"{b['area_px'][0]}-{b['area_px'][1] or ''} px: {b['regions']}"
        + (f" (ecc {b['mean_eccentricity']:.2f})" if b["regions"] else "")
        for b in row["by_area"]
    )
    widths = " | ".join(
        f"major {b['major_axis_px'][0]}-{b['major_axis_px'][1] or ''} px: {b['cells']}"
        + (
            f" (minor {b['median_minor_axis_px']:.1f}, nucleus {n['median_px']:.1f})"
            if b["cells"]
            else ""
        )
        for b, n in zip(
            row["convex_minor_axis_by_major_axis"],
            row["convex_nucleus_minor_axis_by_major_axis"],
            strict=True,
        )
    )
    ratios = " | ".join(
        f"{b['area_px'][0]}-{b['area_px'][1] or ''} px: {b['median_ratio']:.2f}"
        for b in row["convex_axis_ratio_by_area"]
        if b["cells"]
    )
    ratio = row["convex_axis_ratio_quartiles"]
    return (
        f"{name}: {row['regions']} regions, {row['non_convex_regions']} non-convex | {bins} | "
        f"convex major {row['convex_major_axis_px_quartiles'][1]:.1f} px, minor "
        f"{row['convex_minor_axis_px_quartiles'][1]:.1f} px, ratio {ratio[0]:.2f}/{ratio[1]:.2f}"
        f"/{ratio[2]:.2f} | convex cells by length: {widths} | axis ratio by area: {ratios}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path, help="exported cells .safetensors")
    parser.add_argument("--count", type=int, default=400, help="images in each set")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        variant = trained_min_semi_minor(args.exports)
    except InputError as exc:
        parser.error(str(exc))
    rows = {"dataset": breakdown(make_images(args.count, DATASET_SEED, min_semi_minor=variant))}
    print(_line("dataset", rows["dataset"]), flush=True)
    for path in args.exports:
        G = build_generator(*load_checkpoint(path))
        rows[str(path)] = breakdown(generate_images(G, args.count, seed=GENERATED_SEED))
        print(_line(path.name, rows[str(path)]), flush=True)
    if args.json:
        write_report(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
