"""File > Open Sample > napari-freedrag: images from the bundled ``cells`` model.

Each sample remembers the seed(s) it was made from, so it opens into the workflow: with
the FreeDrag widget open it becomes the working image (under the plugin's points), and it
can always be picked as the source image, which continues from that very seed.  The
z-stack sample looks like a microscopist's data (uint16, µm pixels, one seed per plane).
"""

from __future__ import annotations

import numpy as np

from napari_freedrag.engine.run import start_image
from napari_freedrag.napari.source import SAMPLE_KEY

SAMPLE_SEEDS = (0, 1, 2)
TRUNCATION = 0.7
#: The z-stack sample: planes, µm per pixel (z, y, x), and the uint16 range model 0..255 spans.
STACK_PLANES = 6
STACK_SCALE = (2.0, 0.5, 0.5)
STACK_RANGE = (100.0, 4000.0)


def _images(model: str, seeds):
    from napari_freedrag.models.registry import load_generator

    backend = load_generator(model, device="cpu")
    states = [backend.sample(int(seed), truncation=TRUNCATION) for seed in seeds]
    return backend, [start_image(backend, state) for state in states]


def sample_cells(seeds=SAMPLE_SEEDS, model: str = "cells"):
    """One generated RGB image per seed, marked as generated in name and metadata."""
    backend, images = _images(model, seeds)
    layers = []
    for seed, image in zip(seeds, images, strict=True):
        marker = {"model": model, "seed": int(seed), "truncation": TRUNCATION}
        metadata = {"generated": True, "model": backend.name, SAMPLE_KEY: marker, **marker}
        name = f"{backend.name} seed {seed} (generated)"
        layers.append((image, {"name": name, "rgb": True, "metadata": metadata}, "image"))
    return layers


def sample_cells_stack(planes: int = STACK_PLANES, model: str = "cells"):
    """A (z, y, x) uint16 stack with µm pixels, one generated plane per seed."""
    seeds = list(range(planes))
    backend, images = _images(model, seeds)
    low, high = STACK_RANGE
    gray = [np.asarray(image, np.float64).mean(axis=-1) for image in images]
    stack = np.rint(np.stack(gray) / 255.0 * (high - low) + low).astype(np.uint16)
    marker = {
        "model": model, "seeds": seeds, "truncation": TRUNCATION, "value_range": [low, high],
    }  # fmt: skip
    kwargs = {
        "name": f"{backend.name} z-stack (generated)",
        "scale": STACK_SCALE,
        "units": ("um", "um", "um"),
        "contrast_limits": (low, high),
        "metadata": {"generated": True, "model": backend.name, SAMPLE_KEY: marker},
    }
    return [(stack, kwargs, "image")]
