"""DragGAN's pieces: the upsampled read, the motion region, nearest-neighbour tracking."""

import numpy as np
import torch
import torch.nn.functional as F

from napari_freedrag.engine.draggan import motion_region, track, upsampled_position
from napari_freedrag.engine.patches import sample


def test_reading_at_upsampled_positions_equals_interpolating_the_whole_map():
    torch.manual_seed(1)
    features = torch.randn(4, 16, 12)
    scale = torch.tensor([0.25, 0.25], dtype=torch.float64)
    full = F.interpolate(features[None], size=(64, 48), mode="bilinear", align_corners=False)[0]
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    pixels = torch.stack([rows, cols], dim=-1).double()
    ours = sample(features, upsampled_position(pixels, scale)).permute(2, 0, 1)
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)


def test_motion_region_is_a_disc_or_a_square_of_whole_pixels():
    centre = torch.tensor([10.0, 20.0], dtype=torch.float64)
    assert len(motion_region(centre, 1.0, "square")) == 9
    assert len(motion_region(centre, 2.0, "circle")) == 13
    assert len(motion_region(centre, 3.0, "circle")) == 29
    np.testing.assert_array_equal(motion_region(centre, 0.0, "circle").numpy(), [[10, 20]])
    off_grid = motion_region(torch.tensor([10.4, 20.0], dtype=torch.float64), 0.2, "circle")
    np.testing.assert_array_equal(off_grid.numpy(), [[10, 20]])  # never empty


def tracking_map():
    """Zero features except a marker vector at pixel (12, 15) and a closer one far away."""
    features = torch.zeros(3, 32, 32)
    features[:, 12, 15] = torch.tensor([1.0, 2.0, 3.0])
    features[:, 25, 25] = torch.tensor([1.0, 2.0, 3.0])
    return features


def test_tracking_finds_the_nearest_feature_inside_its_square():
    marker = torch.tensor([[1.0, 2.0, 3.0]])
    bounds = torch.tensor([31.0, 31.0], dtype=torch.float64)
    points = torch.tensor([[10.0, 12.0]], dtype=torch.float64)
    for metric in ("l1", "l2"):
        found = track(tracking_map(), points, marker, 3, bounds, lambda q: q, metric)
        np.testing.assert_array_equal(found.numpy(), [[12, 15]])
    # a radius of 2 cannot see the marker 3 columns away: it stays on the zero plateau
    found = track(tracking_map(), points, marker, 2, bounds, lambda q: q, "l2")
    assert not torch.equal(found, torch.tensor([[12.0, 15.0]], dtype=torch.float64))


def test_tracking_near_the_border_stays_inside_the_image():
    features = torch.zeros(2, 16, 16)
    features[:, 0, 0] = 1.0
    bounds = torch.tensor([15.0, 15.0], dtype=torch.float64)
    points = torch.tensor([[1.0, 1.0], [15.0, 15.0]], dtype=torch.float64)
    found = track(features, points, torch.tensor([[1.0, 1.0], [5.0, 5.0]]), 3, bounds,
                  lambda q: q, "l2")  # fmt: skip
    np.testing.assert_array_equal(found[0].numpy(), [0, 0])
    assert (found >= 0).all() and (found <= 15).all()


def _dragdiffusion_rules():
    """The LDM backend's DragDiffusion preset (it needs no loaded model)."""
    from dataclasses import asdict

    from napari_freedrag.models.ldm.backend import LDMBackend

    return asdict(LDMBackend.preset(object.__new__(LDMBackend), "draggan", (64, 64)))


def test_a_handle_exactly_two_feature_px_away_stops_dragGAN_but_not_dragdiffusion():
    from napari_freedrag.engine.run import drag
    from napari_freedrag.models.analytic import AnalyticBackend

    gen = AnalyticBackend()  # feature map at half the image size
    start = gen.from_centres([[16, 16], [48, 44], [16, 48]])
    strict = {**_dragdiffusion_rules(), "lr": 0.005}
    # (16, 16) -> (16, 20) image px is (8, 8) -> (8, 10): exactly 2 feature px
    dragdiffusion = drag(gen, start, [[16, 16]], [[16, 20]], method="draggan", **strict)
    lenient = {**strict, "stop_comparison": "<=", "supervise_distance": 1.0,
               "supervise_comparison": ">"}  # fmt: skip
    draggan = drag(gen, start, [[16, 16]], [[16, 20]], method="draggan", **lenient)

    assert draggan.steps == 0 and draggan.report["points_arrived"]  # <= 2: done at once
    assert dragdiffusion.steps > 0  # < 2 is not met, and >= 2 is still supervised
    left = np.linalg.norm(dragdiffusion.points[0] - [16, 20]) * 0.5
    assert left < 2 and dragdiffusion.report["points_arrived"]
    assert gen.centres(dragdiffusion.state.latent)[0, 1] > 16.5  # the blob really moved


def test_a_handle_one_feature_px_away_is_done_at_once_under_dragdiffusion_rules():
    from napari_freedrag.engine.run import drag
    from napari_freedrag.models.analytic import AnalyticBackend

    gen = AnalyticBackend()
    start = gen.from_centres([[16, 16], [48, 44], [16, 48]])
    result = drag(gen, start, [[16, 16]], [[16, 18]], method="draggan", **_dragdiffusion_rules())
    assert result.steps == 0 and result.converged  # 1 feature px < 2: nothing to do
