"""The analytic backend: a fake model others test with, so it must keep its promises."""

import numpy as np
import pytest
import torch

from napari_freedrag._tests.analytic_scene import BLOB_CENTRES
from napari_freedrag.engine.protocol import Backend, DragSession
from napari_freedrag.engine.run import drag
from napari_freedrag.errors import InputError
from napari_freedrag.models.analytic import AnalyticBackend


def test_it_implements_the_protocol(gen):
    start = gen.sample(0)
    session = gen.session(start, None, "freedrag")
    assert isinstance(gen, Backend) and isinstance(session, DragSession)
    assert session.latent.requires_grad and session.latent.is_leaf
    features = session.features(session.latent)
    assert features.shape == (8, 32, 32) and session.feature_scale == (0.5, 0.5)
    assert session.mask_term(session.latent, features) is None
    image = session.render(session.latent)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8


def test_seeds_give_repeatable_different_images(gen):
    assert np.array_equal(gen.sample(5).image, gen.sample(5).image)
    assert not np.array_equal(gen.sample(5).image, gen.sample(6).image)
    assert gen.sample(5).info == {"model": "analytic", "seed": 5, "truncation": 0.7}


def test_blobs_sit_where_they_are_asked_to(gen):
    layout = [[10, 12], [40, 50], [55, 20]]
    start = gen.from_centres(layout)
    np.testing.assert_allclose(gen.centres(start.latent).numpy(), layout, atol=1e-3)
    red = start.image[10, 12]
    assert red[0] > 200 and red[1] < 100  # the first blob is red, brightest at its centre
    with pytest.raises(ValueError, match="inside"):
        gen.from_centres([[-5, 10], [40, 50], [55, 20]])


def test_a_saved_latent_continues_an_edit(gen):
    start = gen.from_centres(BLOB_CENTRES)
    first = drag(gen, start, [[16, 16]], [[16, 24]])
    again = gen.from_latent(first.state.latent.numpy())
    np.testing.assert_array_equal(again.image, first.image)
    second = drag(gen, again, first.points, [[24, 24]])
    assert second.report["points_arrived"]
    assert np.linalg.norm(gen.centres(second.state.latent).numpy()[0] - [24, 24]) < 2.5
    with pytest.raises(InputError, match="12 finite numbers"):
        gen.from_latent(np.zeros((1, 5)))


def test_the_mask_term_measures_change_outside_the_mask_only(gen):
    start = gen.from_centres(BLOB_CENTRES)
    mask = np.zeros((64, 64))
    mask[:32] = 1  # top half may change
    session = gen.session(start, mask, "freedrag")
    latent = session.latent.detach()
    assert session.mask_term(latent, session.features(latent)).item() == 0.0
    bottom_moved = gen.latent_for([[16, 16], [44, 44], [16, 48]])
    top_moved = gen.latent_for([[12, 16], [48, 44], [16, 48]])
    outside = session.mask_term(bottom_moved, session.features(bottom_moved)).item()
    inside = session.mask_term(top_moved, session.features(top_moved)).item()
    assert outside > 20 * inside


def test_strict_boxes_hide_everything_not_announced():
    gen = AnalyticBackend(strict_boxes=True)
    session = gen.session(gen.sample(1), None, "freedrag")
    features = session.features(session.latent, [(2, 3, 6, 9)])
    assert torch.isfinite(features[:, 2:6, 3:9]).all()
    assert torch.isnan(features[:, 0]).all() and torch.isnan(features[:, :, 10:]).all()
