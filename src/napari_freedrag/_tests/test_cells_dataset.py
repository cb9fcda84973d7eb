"""The procedural cells dataset: images look like the ground truth says they do."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops

from napari_freedrag.cellseg import segment_cells
from napari_freedrag.training.cells.dataset import (
    MAX_CELLS,
    MIN_CELLS,
    MIN_SEMI_MINOR,
    cached_images,
    make_cell_image,
    make_images,
)
from napari_freedrag.training.cells.quality import compare, measure_images

SEEDS = range(12)


@pytest.mark.parametrize("seed", SEEDS)
def test_geometry_matches_the_pixels(seed):
    sample = make_cell_image(seed)
    assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
    assert MIN_CELLS <= len(sample.cells) <= MAX_CELLS
    occupied = np.zeros((64, 64), dtype=int)
    for cell in sample.cells:
        row, col = (int(round(v)) for v in cell.centroid)
        assert cell.mask[row, col], "the centroid must lie inside its cell"
        assert cell.nucleus_mask.sum() > 0 and not (cell.nucleus_mask & ~cell.mask).any()
        props = regionprops(cell.mask.astype(np.uint8))[0]
        assert props.axis_major_length / 2 == pytest.approx(cell.semi_axes[0], rel=0.3)
        if cell.semi_axes[0] > 1.3 * cell.semi_axes[1]:  # orientation is only defined if elongated
            delta = abs(props.orientation - cell.orientation) % np.pi
            assert min(delta, np.pi - delta) < 0.35
        occupied += cell.mask
        # The cell is bright in the image where the mask says it is.
        inside = sample.image[cell.mask].max(axis=-1).mean()
        assert inside > 3 * sample.image[~occupied.astype(bool)].max(axis=-1).mean()
    assert occupied.max() == 1, "cells must not overlap"


def test_seeds_reproduce_and_differ():
    a, b, c = make_cell_image(3), make_cell_image(3), make_cell_image(4)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    np.testing.assert_array_equal(make_images(5, seed=1), make_images(5, seed=1))


def test_segmentation_counts_the_true_cells():
    agree = sum(
        len(segment_cells(make_cell_image(s).image)) == len(make_cell_image(s).cells)
        for s in range(40)
    )
    assert agree >= 38


def test_quality_table_separates_different_distributions():
    real = measure_images(make_images(40, seed=1))
    same = measure_images(make_images(40, seed=2))
    # A "generator" whose cells are dimmer must show up in the intensity rows.
    dim = measure_images((make_images(40, seed=3) * 0.6).astype(np.uint8))
    close = {row["measure"]: row["smd"] for row in compare(real, same)}
    far = {row["measure"]: row["smd"] for row in compare(real, dim)}
    assert all(abs(v) < 0.5 for v in close.values())
    assert far["mean_red"] < -1.0


def test_dataset_cache_is_written_once(tmp_path):
    path = tmp_path / "cache.npy"
    first = cached_images(path, 6, seed=5)
    assert path.exists()
    np.testing.assert_array_equal(cached_images(path, 6, seed=5), first)


def test_a_wider_minimum_drops_the_thin_cells_and_nothing_else():
    def cells(min_semi_minor):
        return [
            cell
            for seed in range(60)
            for cell in make_cell_image(seed, min_semi_minor=min_semi_minor).cells
        ]

    original, wide = cells(MIN_SEMI_MINOR), cells(5.0)
    assert min(c.semi_axes[1] for c in original) < 4.5  # the original has thin cells
    assert min(c.semi_axes[1] for c in wide) >= 5.0 - 1e-9
    # Same counts and sizes: only how elongated the narrow ones may be changes.
    assert len(wide) == len(original)
    np.testing.assert_allclose([c.semi_axes[0] for c in wide], [c.semi_axes[0] for c in original])
    assert np.median([c.semi_axes[0] / c.semi_axes[1] for c in wide]) < np.median(
        [c.semi_axes[0] / c.semi_axes[1] for c in original]
    )
    with pytest.raises(ValueError, match="min_semi_minor"):
        make_cell_image(0, min_semi_minor=8.0)
