"""Procedural fluorescence-microscopy-like cells whose geometry is known exactly.

Each image shows 1-4 cells on a dark background, as three channels rendered as RGB:
red = cytoplasm with a brighter membrane rim, green = punctate vesicles in the cytoplasm,
blue = nucleus. Cells vary in position, size, elongation, orientation, outline wobble,
texture, blur and noise. Every image comes with the ground truth of each cell (centroid,
semi-axes, orientation, cell and nucleus masks), which is what the bundled ``cells``
StyleGAN2 is trained on and what the drag benchmarks measure against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.filters import gaussian

IMAGE_SIZE = 64
MIN_CELLS, MAX_CELLS = 1, 4
# The narrowest cell's semi-minor axis at 64 px. With semi-major axes of 7-13 px and
# elongations of 1-2 the original dataset's narrowest is 3.5 px, so this default draws the
# very images it always drew; a larger value makes small cells less elongated (a dataset
# variant whose thin cells a small generator need not learn, see docs/cells-model.md).
MIN_SEMI_MINOR = 3.5
SMALLEST_SEMI_MAJOR, LARGEST_SEMI_MAJOR = 7.0, 13.0


def check_min_semi_minor(value: float) -> None:
    """A narrowest width every cell can have: at most the smallest semi-major axis."""
    if not 0 < value <= SMALLEST_SEMI_MAJOR:
        raise ValueError(
            f"min_semi_minor must lie in (0, {SMALLEST_SEMI_MAJOR:g}] px, the smallest "
            f"semi-major axis; got {value:g}"
        )


@dataclass(frozen=True)
class Cell:
    """Ground truth of one cell, in image pixels, ``(row, col)`` order.

    ``orientation`` follows scikit-image's ``regionprops`` convention: the angle in
    radians between the row axis and the major axis, in ``[-pi/2, pi/2]``.
    """

    centroid: tuple[float, float]
    semi_axes: tuple[float, float]  # (major, minor) of the underlying ellipse
    orientation: float
    mask: np.ndarray  # (H, W) bool, the whole cell
    nucleus_mask: np.ndarray  # (H, W) bool


@dataclass(frozen=True)
class CellImage:
    image: np.ndarray  # (H, W, 3) uint8
    cells: list[Cell]


def _wobbly_ellipse(rows, cols, center, semi_axes, orientation, harmonics):
    """Boolean mask of an ellipse whose radius is modulated by low-order harmonics."""
    dr, dc = rows - center[0], cols - center[1]
    cos_o, sin_o = np.cos(orientation), np.sin(orientation)
    along = dr * cos_o + dc * sin_o  # major axis lies along the row axis when orientation=0
    across = -dr * sin_o + dc * cos_o
    rho = np.hypot(along / semi_axes[0], across / semi_axes[1])
    theta = np.arctan2(across, along)
    radius = 1.0 + sum(amp * np.cos(k * theta + phase) for k, amp, phase in harmonics)
    return rho <= radius


def _random_harmonics(rng, strength):
    return [(k, rng.uniform(0, strength) / k, rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)]


def _place_cells(rng, size, count, min_semi_minor):
    """Cell centres, sizes and angles that keep cells inside the image and apart."""
    placed = []
    for _ in range(count):
        for _attempt in range(60):
            major_64 = rng.uniform(SMALLEST_SEMI_MAJOR, LARGEST_SEMI_MAJOR)
            # One draw whatever the bound, so the default reproduces the original images.
            elongation = rng.uniform(1.0, min(2.0, major_64 / min_semi_minor))
            major = major_64 * size / IMAGE_SIZE  # cells scale with the image
            minor = major / elongation
            margin = major * 0.8 + 1
            center = rng.uniform(margin, size - 1 - margin, size=2)
            if all(
                np.hypot(*(center - other[0])) > (major + other[1][0]) * 1.1 + 2 for other in placed
            ):
                placed.append((center, (major, minor), rng.uniform(-np.pi / 2, np.pi / 2)))
                break
    return placed


def make_cell_image(
    seed: int | np.random.Generator,
    size: int = IMAGE_SIZE,
    min_semi_minor: float = MIN_SEMI_MINOR,
) -> CellImage:
    """One image with its ground truth; the same seed always gives the same image."""
    check_min_semi_minor(min_semi_minor)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    channels = np.zeros((3, size, size))
    channels += rng.uniform(0.02, 0.07, size=(3, 1, 1))  # dark background per channel
    texture = gaussian(rng.standard_normal((size, size)), sigma=rng.uniform(1.0, 2.5))
    texture /= texture.std() + 1e-8

    cells = []
    for center, semi_axes, orientation in _place_cells(
        rng, size, rng.integers(MIN_CELLS, MAX_CELLS + 1), min_semi_minor
    ):
        mask = _wobbly_ellipse(
            rows, cols, center, semi_axes, orientation, _random_harmonics(rng, 0.12)
        )
        if not mask.any():
            continue
        # The membrane is the mask minus its interior shrunk by ~1.5 px (at 64 px).
        rim = 1.5 * size / IMAGE_SIZE
        inner = _wobbly_ellipse(
            rows, cols, center, (semi_axes[0] - rim, semi_axes[1] - rim), orientation, []
        )
        membrane = mask & ~inner
        nucleus_scale = rng.uniform(0.35, 0.55)
        nucleus_center = center + rng.uniform(-0.15, 0.15, size=2) * semi_axes[1]
        nucleus = mask & _wobbly_ellipse(
            rows,
            cols,
            nucleus_center,
            (semi_axes[0] * nucleus_scale, semi_axes[1] * nucleus_scale * rng.uniform(0.8, 1.1)),
            orientation + rng.uniform(-0.3, 0.3),
            _random_harmonics(rng, 0.06),
        )

        cytoplasm_level = rng.uniform(0.3, 0.6)
        channels[0][mask] = cytoplasm_level * (1 + 0.25 * texture[mask])
        channels[0][membrane] += rng.uniform(0.15, 0.3)
        spots = np.zeros((size, size))
        cyto_idx = np.flatnonzero(mask & ~nucleus)
        if cyto_idx.size:
            spots.flat[rng.choice(cyto_idx, size=min(cyto_idx.size, rng.integers(4, 14)))] = 1.0
        channels[1] += gaussian(spots, sigma=0.9) * rng.uniform(2.5, 5.0)
        channels[1][mask] += rng.uniform(0.03, 0.1)
        channels[2][nucleus] = rng.uniform(0.5, 0.9) * (1 + 0.15 * texture[nucleus])
        channels[0][nucleus] *= 0.6

        measured_center = np.argwhere(mask).mean(axis=0)
        cells.append(
            Cell(
                centroid=(float(measured_center[0]), float(measured_center[1])),
                semi_axes=(float(semi_axes[0]), float(semi_axes[1])),
                orientation=float(orientation),
                mask=mask,
                nucleus_mask=nucleus,
            )
        )

    blur = rng.uniform(0.5, 1.1)
    image = np.stack([gaussian(c, sigma=blur) for c in channels], axis=-1)
    image += rng.normal(0.0, rng.uniform(0.008, 0.03), size=image.shape)
    return CellImage(
        image=(np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8),
        cells=cells,
    )


def make_images(
    count: int, seed: int = 0, size: int = IMAGE_SIZE, min_semi_minor: float = MIN_SEMI_MINOR
) -> np.ndarray:
    """``count`` images as one ``(count, H, W, 3)`` uint8 array (geometry dropped)."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        out[i] = make_cell_image(rng, size, min_semi_minor).image
    return out


def cached_images(
    path: Path | str,
    count: int,
    seed: int = 0,
    size: int = IMAGE_SIZE,
    min_semi_minor: float = MIN_SEMI_MINOR,
):
    """The training set, generated once into a ``.npy`` file and reused afterwards."""
    path = Path(path)
    if path.exists():
        images = np.load(path, mmap_mode=None)
        if images.shape == (count, size, size, 3):
            return images
    images = make_images(count, seed, size, min_semi_minor)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, images)
    return images
