"""The StyleGAN2 backend: official seeds and features, exact fast paths, masks, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_freedrag import testing
from napari_freedrag._tests.stylegan2_fixtures import TOLERANCE, load_fixture, rel_l2
from napari_freedrag.engine.presets import FreeDragParams
from napari_freedrag.engine.protocol import Backend, DragSession
from napari_freedrag.errors import InputError, ModelError
from napari_freedrag.models.stylegan2.backend import StyleGAN2Backend
from napari_freedrag.models.stylegan2.network import Generator
from napari_freedrag.models.stylegan2.partial import run_blocks


def fixture_backend(shared_fixtures, name):
    _config, generator, reference = load_fixture(shared_fixtures, name)
    return StyleGAN2Backend(generator, name, "cpu"), reference


def random_backend(resolution=128, img_channels=3, seed=0):
    """A small random generator whose every tensor matters (non-zero biases and noise)."""
    config = testing.generator_config(
        resolution, z_dim=16, w_dim=32, mapping_layers=2, channel_base=512, channel_max=16,
        img_channels=img_channels, conv_clamp=256,
    )  # fmt: skip
    return testing.random_backend(config, seed=seed, perturb=0.3)


@pytest.fixture(scope="module")
def tiny256(shared_fixtures):
    return fixture_backend(shared_fixtures, "tiny256")


@pytest.fixture(scope="module")
def small():
    return random_backend()


def test_seeds_give_the_official_latents_and_images(tiny256):
    backend, ref = tiny256
    for i, seed in enumerate(ref["seeds"]):
        state = backend.sample(int(seed), truncation=0.7)
        assert rel_l2(state.latent, ref["ws_psi07"][i : i + 1]) <= TOLERANCE
        assert state.image_size == (256, 256)
        assert state.image.dtype == np.uint8 and state.image.shape == (256, 256, 3)
        difference = np.abs(state.image.astype(int) - ref["img_psi07_uint8"][i].astype(int))
        assert difference.max() <= 1
        assert state.info == {"model": "tiny256", "kind": "stylegan2", "seed": int(seed),
                              "truncation": 0.7}  # fmt: skip


def test_session_features_are_the_128px_block(tiny256):
    backend, ref = tiny256
    state = backend.from_latent(ref["ws_psi07"][0])
    session = backend.session(state, None, "freedrag")
    assert session.feature_scale == (0.5, 0.5)
    assert session.latent.shape == (1, 6, 512) and session.latent.requires_grad
    features = session.features(session.latent)
    assert features.shape == (32, 128, 128)
    assert rel_l2(features, ref["feat"][0]) <= TOLERANCE


def test_small_models_use_the_half_size_block(shared_fixtures):
    backend, ref = fixture_backend(shared_fixtures, "tiny64")
    session = backend.session(backend.from_latent(ref["ws_psi07"][0]), None, "freedrag")
    assert session.feature_scale == (0.5, 0.5)
    features = session.features(session.latent)
    assert features.shape == (64, 32, 32)
    assert rel_l2(features, ref["dbg_seed0_b32_x"][0]) <= TOLERANCE


def test_backend_and_session_follow_the_engine_protocol(small):
    assert isinstance(small, Backend)
    assert isinstance(small.session(small.sample(0), None, "freedrag"), DragSession)
    preset = small.preset("freedrag", (128, 128))
    assert isinstance(preset, FreeDragParams) and preset.lr == 0.002


@pytest.mark.parametrize(
    "boxes",
    [
        [(30, 40, 36, 46)],  # one patch
        [(0, 0, 5, 5), (58, 50, 64, 64)],  # two corners
        [(30, 30, 34, 34), (31, 35, 38, 40)],  # overlapping: merged
        [(0, 0, 3, 64)],  # a whole-width strip along the border
        [(-4, 60, 3, 70)],  # reaching outside the map
    ],
)
def test_receptive_field_path_is_exact_inside_boxes(small, boxes):
    session = small.session(small.sample(3), None, "freedrag")
    full = session.features(session.latent)
    fast = session.features(session.latent, boxes)
    assert fast.shape == full.shape
    h, w = full.shape[1:]
    windows = [(slice(None), slice(max(r0, 0), min(r1, h)), slice(max(c0, 0), min(c1, w)))
               for r0, c0, r1, c1 in boxes]  # fmt: skip
    for window in windows:
        assert (fast[window] - full[window]).abs().max() < 1e-5
    grads = []
    for features in (full, fast):
        session.latent.grad = None
        sum(features[window].square().sum() for window in windows).backward(retain_graph=True)
        grads.append(session.latent.grad.clone())
    difference = torch.linalg.vector_norm(grads[1] - grads[0])
    assert difference <= 1e-5 * torch.linalg.vector_norm(grads[0])


def test_fast_path_reads_only_the_receptive_field(small):
    """Outside the boxes' receptive field nothing is computed (zeros), so it really is cheaper."""
    session = small.session(small.sample(3), None, "freedrag")
    fast = session.features(session.latent, [(30, 30, 34, 34)])
    assert fast[:, :20].abs().max() == 0 and fast[:, 30:34, 30:34].abs().min() > 0


@pytest.mark.parametrize(
    "method, masked", [("freedrag", False), ("draggan", False), ("freedrag", True)]
)
def test_a_boxed_run_is_the_full_map_run(small, method, masked):
    """Every read boxed (the start's features too; with a mask, FreeDrag's line searches,
    which need no gradient) against every read of the whole map: the same losses, points,
    content measurement and final image."""
    from napari_freedrag.bench.speed import ModeBackend
    from napari_freedrag.engine.run import drag

    state = small.sample(2)
    handles, targets = [[40, 40], [100, 90]], [[40, 62], [88, 100]]
    mask = None
    if masked:
        mask = np.zeros(small.image_size, np.uint8)
        mask[20:120, 20:120] = 1
    args = (state, handles, targets, mask, method)
    full = drag(ModeBackend(small, "frozen-out"), *args, max_steps=12, preview_every=4)
    boxed = drag(small, *args, max_steps=12, preview_every=4)
    assert len(boxed.trace) == len(full.trace) == 12
    for fast, exact in zip(boxed.trace, full.trace, strict=True):
        assert fast["loss"] == pytest.approx(exact["loss"], rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(fast["points"], exact["points"], atol=1e-6)
    np.testing.assert_allclose(boxed.content_points, full.content_points, atol=1e-4)
    assert np.abs(boxed.image.astype(int) - full.image.astype(int)).max() <= 1
    assert np.linalg.norm(boxed.points - handles, axis=1).max() >= 1  # the points moved


def test_gradients_match_the_plain_network(small):
    """Cached frozen layers must not change the gradient the drag optimises."""
    state = small.sample(5)
    session = small.session(state, None, "freedrag")
    features = session.features(session.latent)
    (features[:, 10:20, 10:20] ** 2).mean().backward()
    latent = state.latent[:, :6].clone().requires_grad_(True)
    ws = torch.cat([latent, state.latent[:, 6:]], dim=1)
    x, _ = run_blocks(small.generator.synthesis, ws, until=64, with_img=False)
    assert (x[0] - features).abs().max() < 1e-5
    (x[0, :, 10:20, 10:20] ** 2).mean().backward()
    assert torch.allclose(session.latent.grad, latent.grad, rtol=1e-4, atol=1e-8)
    assert all(p.grad is None for p in small.generator.parameters())


def test_finish_keeps_frozen_vectors_and_renders_the_edit(small):
    state = small.sample(7)
    session = small.session(state, None, "freedrag")
    same = session.finish(session.latent)
    assert torch.equal(same.latent, state.latent)
    assert np.array_equal(same.image, state.image)
    assert same.info["parent"] == state.info
    moved = session.latent.detach() + 0.5
    edited = session.finish(moved)
    assert torch.equal(edited.latent[:, :6], moved)
    assert torch.equal(edited.latent[:, 6:], state.latent[:, 6:])
    assert np.abs(edited.image.astype(int) - state.image.astype(int)).mean() > 1
    assert np.array_equal(session.render(moved), edited.image)


def test_mask_term_penalises_change_outside_the_editable_region(small):
    state = small.sample(2)
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[:, :64] = 1
    session = small.session(state, mask, "freedrag")
    features = session.features(session.latent, [(5, 5, 9, 9)]).detach()  # mask: full map
    assert features.shape == (8, 64, 64) and features[:, 40:].abs().min() > 0
    assert float(session.mask_term(session.latent, features)) == 0.0
    changed = features.clone()
    changed[:, :, :30] += 1.0  # editable columns (feature px < 32): free
    assert float(session.mask_term(session.latent, changed)) == 0.0
    changed[:, :, 40:] += 1.0  # outside (columns 32-63): 24 of 32 columns changed by 1
    assert float(session.mask_term(session.latent, changed)) == pytest.approx(24 / 32, rel=1e-4)


def test_a_masked_session_computes_the_start_map_once(small):
    """The engine's read of the start map is the one the mask term keeps; a read that
    needs a gradient, or of another latent, is computed."""
    state = small.sample(2)
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[:, :64] = 1
    session = small.session(state, mask, "freedrag")
    start = session.latent.detach().clone()
    with torch.no_grad():
        first, second = session.features(start), session.features(start, [(1, 1, 4, 4)])
        other = session.features(start + 0.1)
    assert first is second and not torch.equal(other, first)
    exact = small.session(state, None, "freedrag").features(start)
    assert (first - exact).abs().max() < 1e-5
    graph = session.features(session.latent)
    assert graph.requires_grad and graph is not first


def test_a_render_hands_its_feature_map_to_the_next_read(small):
    """The engine measures where the content went on the image it just rendered: the map
    comes from the render, the same numbers as the feature path's."""
    session = small.session(small.sample(2), None, "freedrag")
    moved = session.latent.detach() + 0.3
    image = session.render(moved)
    with torch.no_grad():
        kept = session.features(moved.clone(), [(3, 3, 9, 9)])
        again = session.features(moved.clone())
        other = session.features(moved + 0.1)
    assert kept is again and not torch.equal(other, kept)
    exact = small.session(small.sample(2), None, "freedrag").features(moved)
    assert (kept - exact).abs().max() < 1e-5 * exact.abs().max()
    assert np.array_equal(image, small.render(torch.cat([moved, small.sample(2).latent[:, 6:]], 1)))
    assert session.features(session.latent).requires_grad


@pytest.mark.parametrize("fill", [0, 1])
def test_empty_or_full_masks_have_no_mask_term(small, fill):
    session = small.session(small.sample(2), np.full((128, 128), fill), "freedrag")
    assert session.mask_term(session.latent, session.features(session.latent)) is None


def test_no_mask_no_mask_term(small):
    session = small.session(small.sample(2), None, "draggan")
    assert session.mask_term(session.latent, session.features(session.latent)) is None


def test_grayscale_models_render_rgb():
    backend = random_backend(resolution=32, img_channels=1)
    image = backend.sample(0).image
    assert image.shape == (32, 32, 3) and np.array_equal(image[..., 0], image[..., 1])


def test_from_latent_accepts_saved_latents(small):
    state = small.sample(4)
    again = small.from_latent(state.latent[0].numpy())
    assert torch.equal(again.latent, state.latent)
    assert np.array_equal(again.image, state.image)


@pytest.mark.parametrize(
    "latent,message",
    [
        (np.zeros((8, 32), np.float32), r"shape \(1, 12, 32\)"),
        (np.zeros((1, 14, 512)), "another model"),
        (np.full((12, 32), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_latents_are_refused(small, latent, message):
    with pytest.raises(InputError, match=message):
        small.from_latent(latent)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "7"])
def test_bad_seeds_are_refused(small, seed):
    with pytest.raises(InputError, match="seed"):
        small.sample(seed)


def test_bad_session_inputs_are_refused(small):
    state = small.sample(0)
    with pytest.raises(InputError, match=r"mask .*\(128, 128\)"):
        small.session(state, np.ones((64, 64)), "freedrag")
    with pytest.raises(InputError, match="method"):
        small.session(state, None, "dragdiffusion")
    with pytest.raises(InputError, match="truncation"):
        small.sample(0, truncation=float("nan"))


def test_unsupported_channel_counts_are_refused():
    generator = Generator(8, 0, 16, 8, 4, channel_base=64, channel_max=8)
    with pytest.raises(ModelError, match="4-channel"):
        StyleGAN2Backend(generator, "rgba", "cpu")


def test_bfloat16_synthesis_stays_close_to_float32(small):
    """The reduced-precision option (for GPUs) checked on the CPU: same image to the eye,
    features within bfloat16's rounding, and a drag that still moves the handle."""
    from napari_freedrag.engine.run import drag

    reduced = StyleGAN2Backend(small.generator, small.name, precision="bfloat16")
    state = small.sample(4)
    image = reduced.render(state.latent)
    assert image.dtype == np.uint8
    assert np.abs(image.astype(int) - state.image.astype(int)).mean() < 1
    full = small.session(state, None, "freedrag").features(state.latent[:, :6])
    low = reduced.session(state, None, "freedrag").features(state.latent[:, :6])
    assert low.dtype == torch.float32 and not torch.equal(low, full)  # it did run reduced
    assert torch.linalg.vector_norm(low - full) < 0.03 * torch.linalg.vector_norm(full)
    result = drag(reduced, state, [[64, 64]], [[64, 80]], max_steps=6)
    assert np.isfinite(result.trace[-1]["loss"]) and result.points[0, 1] > 64


@pytest.mark.parametrize("precision", ["float16", "float8", None])
def test_unsupported_precisions_are_refused(small, precision):
    with pytest.raises(InputError, match="bfloat16"):
        StyleGAN2Backend(small.generator, "x", precision=precision)


@pytest.mark.parametrize("clamp", [0.8, 256.0])
def test_the_lean_activation_is_autograds(small, monkeypatch, clamp):
    """The drag path's activation keeps booleans for its backward instead of two float
    maps; its values and gradients must be autograd's exactly, whether the clamp cuts a
    good part of the map (0.8) or nothing (256)."""
    from napari_freedrag.models.stylegan2 import partial

    layer = next(layer for _, layer, _ in small.generator.synthesis.conv_layers())
    monkeypatch.setattr(layer, "conv_clamp", clamp)
    monkeypatch.setattr(partial, "LEAN_ACTIVATION_NUMEL", 1)
    generator = torch.Generator().manual_seed(0)
    y = torch.randn(1, layer.bias.numel(), 8, 8, generator=generator)
    noise = torch.randn(8, 8, generator=generator)
    upstream = torch.randn(1, layer.bias.numel(), 8, 8, generator=generator)
    results = []
    for activate in (layer.activate, lambda y, noise: partial._activate(layer, y, noise)):
        leaf = y.clone().requires_grad_(True)
        out = activate(leaf, noise)
        results.append(type(out.grad_fn).__name__)
        out.backward(upstream)
        results.append((out.detach(), leaf.grad))
    plain_fn, (plain, plain_grad), lean_fn, (lean, lean_grad) = results
    assert lean_fn == "_LeanActivationBackward" and plain_fn != lean_fn
    assert torch.equal(plain, lean) and torch.equal(plain_grad, lean_grad)
    assert ((plain.abs() == clamp).float().mean() > 0.1) == (clamp < 1) and (plain < 0).any()


def test_a_masked_drag_is_the_same_through_the_lean_activation(small, monkeypatch):
    from napari_freedrag.engine.run import drag
    from napari_freedrag.models.stylegan2 import partial

    state = small.sample(4)
    mask = np.zeros(small.image_size, np.uint8)
    mask[30:110, 30:110] = 1
    runs = []
    for threshold in (2**40, 1):  # never, always
        monkeypatch.setattr(partial, "LEAN_ACTIVATION_NUMEL", threshold)
        runs.append(drag(small, state, [[60, 60]], [[60, 80]], mask, max_steps=6))
    plain, lean = runs
    assert [t["loss"] for t in lean.trace] == [t["loss"] for t in plain.trace]
    assert np.array_equal(lean.points, plain.points) and np.array_equal(lean.image, plain.image)
