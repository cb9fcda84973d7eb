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


def test_quality_evaluation_of_the_shipped_weights_gives_the_documented_smds(tmp_path, capsys):
    """``evaluate --quality-only`` (how a run's curve is followed) on the bundled export:
    one row per file appended to the JSON, six SMDs, and the figures docs/cells-model.md
    gives for the shipped weights under selection protocol v3 (600 images: largest |SMD|
    0.46, eccentricity -0.46); the second sample is drawn from other seeds."""
    from napari_freedrag.training.cells.evaluate import main
    from napari_freedrag.training.cells.quality import MEASURES

    out = tmp_path / "evaluation.json"
    out.write_text(json.dumps([{"file": "an earlier row"}]))
    weights = str(bundled_weights_path())
    assert main([weights, "--quality-only", "--json", str(out)]) == 0
    assert main([weights, "--quality-only", "--second-sample", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows[0] == {"file": "an earlier row"} and len(rows) == 3
    first, second = rows[1], rows[2]
    assert set(first["smd"]) == set(MEASURES) and "moves" not in first
    assert (first["smd_sample"], second["smd_sample"]) == ("first", "second")
    assert first["smd_images"] == 600
    assert first["max_abs_smd"] == max(abs(v) for v in first["smd"].values())
    assert (
        abs(first["max_abs_smd"] - 0.46) < 0.02 and abs(first["smd"]["eccentricity"] + 0.46) < 0.02
    )
    assert second["smd"] != first["smd"]
    assert all(abs(second["smd"][m] - first["smd"][m]) < 0.15 for m in MEASURES)
    assert "cells.safetensors: kimg 138.82 max|SMD| 0.46" in capsys.readouterr().out
