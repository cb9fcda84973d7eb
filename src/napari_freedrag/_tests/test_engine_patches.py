"""Bilinear patch sampling, clamping at the borders, and the boxes the engine announces."""

import numpy as np
import pytest
import torch

from napari_freedrag.engine.patches import (
    box_around,
    discrepancy,
    patch_features,
    patch_offsets,
    sample,
)


def ramp(h=6, w=8):
    """Two channels: value = row and value = 10 * col, so bilinear samples are exact."""
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([rows, 10 * cols])


def test_bilinear_sample_interpolates_between_pixels():
    values = sample(ramp(), torch.tensor([[2.25, 3.5], [0.0, 0.0], [5.0, 7.0]]))
    np.testing.assert_allclose(values.numpy(), [[2.25, 35.0], [0.0, 0.0], [5.0, 70.0]])


def test_bilinear_sample_of_a_curved_map_mixes_four_neighbours():
    features = torch.tensor([[[0.0, 1.0], [2.0, 7.0]]])
    value = sample(features, torch.tensor([[0.5, 0.5]]))
    assert value.item() == pytest.approx((0 + 1 + 2 + 7) / 4)


def test_positions_outside_the_map_are_clamped_to_the_edge():
    features = ramp()
    outside = torch.tensor([[-3.0, -1.0], [9.0, 20.0], [2.0, 7.9]])
    values = sample(features, outside)
    np.testing.assert_allclose(values.numpy(), [[0, 0], [5, 70], [2, 70]], atol=1e-5)
    assert torch.isfinite(values).all()


def test_gradients_reach_the_features_not_the_positions():
    features = ramp().requires_grad_(True)
    positions = torch.tensor([[1.5, 2.5]], requires_grad=True)
    sample(features, positions).sum().backward()
    assert positions.grad is None
    assert features.grad.sum().item() == pytest.approx(2.0)  # weights sum to 1 per channel
    assert (features.grad[:, 1:3, 2:4] == 0.25).all()


def test_patch_offsets_span_the_radius_on_a_grid():
    offsets = patch_offsets(3, (1.5, 3.0))
    assert offsets.shape == (9, 2)
    np.testing.assert_allclose(offsets[:, 0].unique().numpy(), [-1.5, 0, 1.5])
    np.testing.assert_allclose(offsets[:, 1].unique().numpy(), [-3.0, 0, 3.0])
    ldm = patch_offsets(9, (4.0, 4.0))
    np.testing.assert_allclose(ldm[:, 0].unique().numpy(), np.arange(-4, 5))
    assert patch_offsets(1, (2.0, 2.0)).abs().sum() == 0


def test_patch_features_and_mean_absolute_discrepancy():
    features = ramp()
    offsets = patch_offsets(3, (1.0, 1.0))
    here = patch_features(features, torch.tensor([[2.0, 3.0]]), offsets)
    there = patch_features(features, torch.tensor([[2.0, 4.0]]), offsets)
    assert here.shape == (1, 9, 2)
    # channel 0 (rows) is unchanged, channel 1 differs by 10 everywhere: mean = 5
    assert discrepancy(there, here).item() == pytest.approx(5.0)


def test_patch_at_the_corner_reads_clamped_values_only():
    features = ramp()
    offsets = patch_offsets(3, (1.5, 1.5))
    corner = patch_features(features, torch.tensor([[0.0, 0.0]]), offsets)
    assert corner[0, :, 0].min() == 0 and corner[0, :, 1].min() == 0
    assert torch.isfinite(corner).all()


def test_boxes_cover_every_bilinear_read():
    torch.manual_seed(0)
    features = torch.randn(3, 20, 24)
    for _ in range(50):
        positions = torch.rand(7, 2) * torch.tensor([26.0, 30.0]) - 3  # some off the map
        r0, c0, r1, c1 = box_around(positions, (20, 24))
        strict = torch.full_like(features, float("nan"))
        strict[:, r0:r1, c0:c1] = features[:, r0:r1, c0:c1]
        assert torch.equal(sample(strict, positions), sample(features, positions))
