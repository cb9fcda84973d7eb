"""Each backend's preset carries the published constants; overrides are validated with a
clear message; the engine itself holds no model kinds."""

from pathlib import Path

import pytest

from napari_freedrag.engine import presets
from napari_freedrag.engine.presets import DragGANParams, FreeDragParams, apply_overrides, describe
from napari_freedrag.errors import InputError
from napari_freedrag.models.analytic import AnalyticBackend
from napari_freedrag.models.ldm.backend import LDMBackend
from napari_freedrag.models.stylegan2.backend import StyleGAN2Backend


@pytest.fixture(scope="module")
def tiny_generator():
    from napari_freedrag.testing import random_generator

    return random_generator()


def backend_preset(kind, method, size, category=None, generator=None):
    """The preset a backend of ``kind`` gives (the LDM preset needs no loaded model)."""
    if kind == "stylegan2":
        return StyleGAN2Backend(generator, "tiny", category=category).preset(method, size)
    if kind == "ldm":
        return LDMBackend.preset(object.__new__(LDMBackend), method, size)
    return AnalyticBackend().preset(method, size)


def test_stylegan2_freedrag_preset_matches_the_spec(tiny_generator):
    p = backend_preset("stylegan2", "freedrag", (256, 256), generator=tiny_generator)
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
def test_large_animals_get_a_larger_patch_discrepancy(category, tiny_generator):
    p = backend_preset("stylegan2", "freedrag", (512, 512), category, tiny_generator)
    assert (p.l, p.d) == (0.4, 4.0)
    assert backend_preset("stylegan2", "freedrag", (512, 512), "faces", tiny_generator).l == 0.3


def test_ldm_freedrag_preset_matches_the_spec():
    p = backend_preset("ldm", "freedrag", (512, 512))
    assert (p.l, p.d, p.lr, p.exit_fraction, p.done_fraction) == (1.0, 5.0, 0.01, 0.5, 0.5)
    assert (p.arrive_distance, p.arrive_units) == (2.0, "feature")
    assert (p.patch_grid, p.patch_radius, p.patch_units) == (9, 4.0, "feature")
    assert p.snap_to_feature_grid and p.mask_weight == 10 and p.max_steps == 300


@pytest.mark.parametrize(
    "size, r1, r2, stop", [(256, 2, 6, 2.0), (512, 3, 12, 2.0), (1024, 6, 24, 4.0)]
)
def test_draggan_radii_scale_with_the_image(size, r1, r2, stop, tiny_generator):
    p = backend_preset("stylegan2", "draggan", (size, size), generator=tiny_generator)
    assert isinstance(p, DragGANParams)
    assert (p.motion_radius, p.track_radius, p.stop_distance) == (r1, r2, stop)
    assert (p.lr, p.mask_weight, p.units, p.track_metric, p.motion_shape) == (
        0.001, 20.0, "image", "l2", "circle"
    )  # fmt: skip


def test_dragdiffusion_preset_matches_the_spec():
    p = backend_preset("ldm", "draggan", (512, 512))
    assert (p.lr, p.motion_radius, p.track_radius, p.stop_distance) == (0.01, 1.0, 3.0, 2.0)
    assert (p.units, p.motion_shape, p.motion_reduction, p.track_metric) == (
        "feature", "square", "sum", "l1"
    )  # fmt: skip
    assert (p.mask_weight, p.max_steps) == (0.1, 80)
    # strict rules: stop only when every handle is < 2, supervise every point >= 2 away
    assert (p.stop_comparison, p.supervise_distance, p.supervise_comparison) == ("<", 2.0, ">=")


def test_draggan_compares_the_other_way_round(tiny_generator):
    p = backend_preset("stylegan2", "draggan", (512, 512), generator=tiny_generator)
    assert (p.stop_comparison, p.supervise_distance, p.supervise_comparison) == ("<=", 1.0, ">")


def test_overrides_return_a_validated_copy(tiny_generator):
    base = backend_preset("stylegan2", "freedrag", (256, 256), generator=tiny_generator)
    changed = apply_overrides(base, {"l": 0.5, "max_steps": 20.0, "snap_to_feature_grid": True})
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
        ({"l": "0.5"}, "'l' must be a number"),
        ({"snap_to_feature_grid": 1}, "'snap_to_feature_grid' must be False or True"),
        ({"track_radius": 3}, "unknown parameter 'track_radius' for FreeDragParams"),
    ],
)
def test_bad_overrides_name_the_parameter_and_its_range(overrides, message, tiny_generator):
    with pytest.raises(InputError, match=message):
        apply_overrides(
            backend_preset("stylegan2", "freedrag", (256, 256), generator=tiny_generator), overrides
        )


def test_the_engine_holds_no_model_kinds_or_categories():
    source = Path(presets.__file__).read_text().lower()
    for word in ("stylegan2", "ldm", "analytic", "lion", "elephant", "giraffe", "default_params"):
        assert word not in source, word


@pytest.mark.parametrize("value", [True, "3", None, [3]])
def test_numbers_of_the_wrong_type_are_refused(value, tiny_generator):
    base = backend_preset("stylegan2", "freedrag", (256, 256), generator=tiny_generator)
    with pytest.raises(InputError, match="'max_steps' must be an integer"):
        apply_overrides(base, {"max_steps": value})


def test_every_parameter_is_described_with_its_range():
    for params in (
        backend_preset("ldm", "freedrag", (64, 64)),
        backend_preset("ldm", "draggan", (64, 64)),
        backend_preset("analytic", "draggan", (64, 64)),
    ):
        for name, entry in describe(params).items():
            assert entry["doc"] and ("range" in entry or "choices" in entry), name
