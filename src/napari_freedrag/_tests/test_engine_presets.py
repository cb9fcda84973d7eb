"""Presets carry the spec's constants; overrides are validated with a clear message."""

import pytest

from napari_freedrag.engine.presets import (
    DragGANParams,
    FreeDragParams,
    apply_overrides,
    default_params,
    describe,
)
from napari_freedrag.errors import InputError


def test_stylegan2_freedrag_preset_matches_the_spec():
    p = default_params("stylegan2", "freedrag", (256, 256))
    assert isinstance(p, FreeDragParams)
    assert (p.l, p.d, p.lr, p.inner_steps, p.max_steps, p.preview_every) == (
        0.3,
        3,
        0.002,
        5,
        300,
        5,
    )
    assert (p.exit_fraction, p.done_fraction, p.arrive_distance, p.arrive_units) == (
        0.25, 0.25, 1.0, "image"
    )  # fmt: skip
    assert (p.patch_grid, p.patch_radius, p.patch_units, p.mask_weight) == (3, 3.0, "image", 10)
    assert not p.snap_to_feature_grid


@pytest.mark.parametrize("category", ["elephants", "Lions", "dog", "giraffes"])
def test_large_animals_get_a_larger_patch_discrepancy(category):
    p = default_params("stylegan2", "freedrag", (512, 512), category)
    assert (p.l, p.d) == (0.4, 4.0)
    assert default_params("stylegan2", "freedrag", (512, 512), "faces").l == 0.3


def test_ldm_freedrag_preset_matches_the_spec():
    p = default_params("ldm", "freedrag", (512, 512))
    assert (p.l, p.d, p.lr, p.exit_fraction, p.done_fraction) == (1.0, 5.0, 0.01, 0.5, 0.5)
    assert (p.arrive_distance, p.arrive_units) == (2.0, "feature")
    assert (p.patch_grid, p.patch_radius, p.patch_units) == (9, 4.0, "feature")
    assert p.snap_to_feature_grid and p.mask_weight == 10 and p.max_steps == 300


@pytest.mark.parametrize(
    "size, r1, r2, stop", [(256, 2, 6, 2.0), (512, 3, 12, 2.0), (1024, 6, 24, 4.0)]
)
def test_draggan_radii_scale_with_the_image(size, r1, r2, stop):
    p = default_params("stylegan2", "draggan", (size, size))
    assert isinstance(p, DragGANParams)
    assert (p.motion_radius, p.track_radius, p.stop_distance) == (r1, r2, stop)
    assert (p.lr, p.mask_weight, p.units, p.track_metric, p.motion_shape) == (
        0.001, 20.0, "image", "l2", "circle"
    )  # fmt: skip


def test_dragdiffusion_preset_matches_the_spec():
    p = default_params("ldm", "draggan", (512, 512))
    assert (p.lr, p.motion_radius, p.track_radius, p.stop_distance) == (0.01, 1.0, 3.0, 2.0)
    assert (p.units, p.motion_shape, p.motion_reduction, p.track_metric) == (
        "feature", "square", "sum", "l1"
    )  # fmt: skip
    assert (p.mask_weight, p.max_steps, p.motion_skip_distance) == (0.1, 80, 2.0)


def test_overrides_return_a_validated_copy():
    base = default_params("stylegan2", "freedrag", (256, 256))
    changed = apply_overrides(base, {"l": "0.5", "max_steps": 20.0, "snap_to_feature_grid": True})
    assert (changed.l, changed.max_steps, changed.snap_to_feature_grid) == (0.5, 20, True)
    assert isinstance(changed.max_steps, int) and base.l == 0.3
    assert apply_overrides(base, {}) is base


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"d": 0}, r"'d' must be a number in \[0.1, 64.0\], got 0"),
        ({"lr": float("nan")}, "'lr' must be a number"),
        ({"inner_steps": 0}, r"'inner_steps' must be an integer in \[1, 100\]"),
        ({"patch_grid": "three"}, "'patch_grid' must be an integer"),
        ({"snap_to_feature_grid": 1}, "'snap_to_feature_grid' must be False or True"),
        ({"track_radius": 3}, "unknown parameter 'track_radius' for FreeDragParams"),
    ],
)
def test_bad_overrides_name_the_parameter_and_its_range(overrides, message):
    with pytest.raises(InputError, match=message):
        apply_overrides(default_params("stylegan2", "freedrag", (256, 256)), overrides)


def test_unknown_kind_or_method_is_refused():
    with pytest.raises(InputError, match="unknown backend kind 'vae'"):
        default_params("vae", "freedrag", (64, 64))
    with pytest.raises(InputError, match="unknown method 'dragon'"):
        default_params("stylegan2", "dragon", (64, 64))


def test_every_parameter_is_described_with_its_range():
    for params in (
        default_params("ldm", "freedrag", (64, 64)),
        default_params("ldm", "draggan", (64, 64)),
    ):
        for name, entry in describe(params).items():
            assert entry["doc"] and ("range" in entry or "choices" in entry), name
