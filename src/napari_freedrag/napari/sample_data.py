"""File > Open Sample > napari-freedrag: images from the bundled ``cells`` model."""

from __future__ import annotations

SAMPLE_SEEDS = (0, 1, 2)


def sample_cells(seeds=SAMPLE_SEEDS, model: str = "cells"):
    """One generated RGB image per seed, marked as generated in name and metadata."""
    from napari_freedrag.models.registry import load_generator
    from napari_freedrag.napari.runner import start_image

    backend = load_generator(model, device="cpu")
    layers = []
    for seed in seeds:
        state = backend.sample(int(seed), truncation=0.7)
        metadata = {"generated": True, "model": backend.name, "seed": int(seed), "truncation": 0.7}
        name = f"{backend.name} seed {seed} (generated)"
        kwargs = {"name": name, "rgb": True, "metadata": metadata}
        layers.append((start_image(backend, state), kwargs, "image"))
    return layers
