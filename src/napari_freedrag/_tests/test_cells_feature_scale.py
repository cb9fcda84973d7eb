"""Rescaling the cells generator's activations: features scale, the image does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_freedrag.testing import generator_config, random_generator
from napari_freedrag.training.cells.feature_scale import (
    calibrate,
    preset_l,
    rescale_activations,
    shift_discrepancy,
)


def tiny_generator():
    """Non-zero biases and noise strengths, as after training: every rescaled tensor counts."""
    config = generator_config(
        32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=32
    )
    return random_generator(config, perturb=0.2)


def render(G, z):
    x = img = None
    out = {}
    with torch.no_grad():
        ws = G.mapping(z, None)
        for res in (4, 8, 16, 32):
            x, img = G.synthesis.block(res)(x, img, G.synthesis.block_ws(ws, res))
            out[res] = x
    return out, img


def test_rescaling_multiplies_features_and_keeps_the_image():
    G = tiny_generator()
    z = torch.from_numpy(np.random.RandomState(0).randn(2, 16)).float()
    before, image_before = render(G, z)
    rescale_activations(G, 37.0)
    after, image_after = render(G, z)
    for res in before:
        torch.testing.assert_close(after[res], before[res] * 37.0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(image_after, image_before, rtol=1e-4, atol=1e-5)
    assert image_before.abs().max() > 0.05  # the comparison is not between two blank images
    with pytest.raises(ValueError):
        rescale_activations(G, 0.0)


def test_calibration_reaches_the_target_discrepancy():
    G = tiny_generator()
    scale = calibrate(G, target=0.7, count=2)
    assert scale > 0
    assert shift_discrepancy(G, count=2) == pytest.approx(0.7, rel=1e-3)


def test_calibration_targets_the_presets_l_by_default():
    """The export is calibrated for the ``l`` FreeDrag will drag it with, not a copy of it."""
    G = tiny_generator()
    calibrate(G, count=2)
    assert shift_discrepancy(G, count=2) == pytest.approx(preset_l(G), rel=1e-3)
