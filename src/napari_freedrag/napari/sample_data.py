"""File > Open Sample > napari-freedrag: images from the bundled ``cells`` model.

Each sample remembers the seed it was made from, so it opens into the workflow: with the
FreeDrag widget open it becomes the working image (under the plugin's points), and it can
always be picked as the source image, which continues from that very seed.
"""

from __future__ import annotations

from napari_freedrag.napari.source import SAMPLE_KEY

SAMPLE_SEEDS = (0, 1, 2)
TRUNCATION = 0.7


def sample_cells(seeds=SAMPLE_SEEDS, model: str = "cells"):
    """One generated RGB image per seed, marked as generated in name and metadata."""
    from napari_freedrag.models.registry import load_generator
    from napari_freedrag.napari.runner import start_image

    backend = load_generator(model, device="cpu")
    layers = []
    for seed in seeds:
        state = backend.sample(int(seed), truncation=TRUNCATION)
        marker = {"model": model, "seed": int(seed), "truncation": TRUNCATION}
        metadata = {"generated": True, "model": backend.name, SAMPLE_KEY: marker, **marker}
        name = f"{backend.name} seed {seed} (generated)"
        kwargs = {"name": name, "rgb": True, "metadata": metadata}
        layers.append((start_image(backend, state), kwargs, "image"))
    return layers
