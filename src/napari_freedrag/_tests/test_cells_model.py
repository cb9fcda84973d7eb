"""The bundled cells model: it ships, loads offline by name and draws cells."""

from __future__ import annotations

import json

import numpy as np

import napari_freedrag as nfd
from napari_freedrag.cellseg import segment_cells
from napari_freedrag.models.cells import bundled_weights_path


def test_weights_ship_as_small_package_data():
    path = bundled_weights_path()
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert path.stat().st_size < 8 * 2**20, "the bundled weights must stay a few MB"
    config = json.loads(path.with_suffix(".json").read_text())
    config = config.get("config", config)
    assert config["img_resolution"] == 64 and config["img_channels"] == 3


def test_load_by_name_draws_a_few_cells_per_image():
    gen = nfd.load_generator("cells", device="cpu")
    assert gen.kind == "stylegan2" and tuple(gen.image_size) == (64, 64)
    like_the_dataset = []
    for seed in range(6):
        image = gen.sample(seed).image
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        regions = segment_cells(image)
        covered = sum(region.area for region in regions) / (64 * 64)
        # Separate cell-sized objects on a dark background, as in the training data
        # (dataset cells are ~100-600 px and cover 5-40 % of the image).
        like_the_dataset.append(
            1 <= len(regions) <= 6
            and all(40 <= region.area <= 1200 for region in regions)
            and covered < 0.5
        )
    assert sum(like_the_dataset) >= 4, like_the_dataset


def test_seeds_are_reproducible_and_distinct():
    gen = nfd.load_generator("cells", device="cpu")
    np.testing.assert_array_equal(gen.sample(3).image, gen.sample(3).image)
    assert np.abs(gen.sample(3).image.astype(int) - gen.sample(4).image).mean() > 5
