"""Finding the cells in an image of the bundled ``cells`` model or of its training set.

One segmentation for everything that measures cells (the training quality check, the
export's feature-scale calibration, the benchmark and the drag sanity check), so that
their figures compare: smooth the channel maximum, fixed threshold, fill holes, label,
drop specks. On the procedural dataset it finds exactly the true number of cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FOREGROUND_THRESHOLD = 0.15  # of full scale; dataset background stays below ~0.08
MIN_CELL_AREA = 20  # px; smaller specks are noise, the smallest real cell is ~100 px


def segment_cells(image: np.ndarray) -> list:
    """Regions of the cells in one ``(H, W, 3)`` uint8 image (scikit-image regionprops)."""
    from scipy import ndimage
    from skimage.filters import gaussian
    from skimage.measure import label, regionprops

    rgb = image.astype(np.float64) / 255.0
    foreground = gaussian(rgb.max(axis=-1), sigma=1.0) > FOREGROUND_THRESHOLD
    regions = regionprops(label(ndimage.binary_fill_holes(foreground)), intensity_image=rgb)
    return [region for region in regions if region.area >= MIN_CELL_AREA]


@dataclass
class SegmentedCell:
    """One segmented cell: mask, centroid and major axis from its pixel coordinates."""

    mask: np.ndarray
    centroid: np.ndarray
    axis: np.ndarray  # unit vector (row, col) along the major axis
    length: float  # major axis length, 4 sqrt(largest eigenvalue), as regionprops
    area: int


def segment(image: np.ndarray) -> list[SegmentedCell]:
    """The cells of :func:`segment_cells` with the geometry drag instructions need."""
    cells = []
    for region in segment_cells(image):
        coords = region.coords.astype(np.float64)
        centroid = coords.mean(axis=0)
        values, vectors = np.linalg.eigh(np.cov((coords - centroid).T, bias=True))
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask[tuple(region.coords.T)] = True
        length = 4 * np.sqrt(max(values[-1], 0))
        cells.append(SegmentedCell(mask, centroid, vectors[:, -1], length, int(region.area)))
    return cells


def shift_mask(mask: np.ndarray, offset) -> np.ndarray:
    """``mask`` moved by ``offset`` (row, col) pixels, nearest-pixel, empty where it leaves."""
    from scipy import ndimage

    return ndimage.shift(mask.astype(np.float32), offset, order=0, mode="constant") > 0.5


def match(cells: list[SegmentedCell], reference: np.ndarray, taken=frozenset()) -> int | None:
    """Index of the cell (not in ``taken``) overlapping ``reference`` most; None if none does."""
    overlaps = [
        int((c.mask & reference).sum()) if k not in taken else 0 for k, c in enumerate(cells)
    ]
    return int(np.argmax(overlaps)) if overlaps and max(overlaps) > 0 else None
