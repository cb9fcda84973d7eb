"""Our StyleGAN2 generator computes what NVIDIA's official one computes for the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_freedrag._tests.stylegan2_fixtures import TOLERANCE, load_fixture, rel_l2
from napari_freedrag.errors import ModelError
from napari_freedrag.models.stylegan2.network import Generator, to_uint8_image
from napari_freedrag.models.stylegan2.partial import run_blocks


@pytest.fixture(scope="module", params=["tiny64", "tiny256"])
def fixture_model(request, shared_fixtures):
    return load_fixture(shared_fixtures, request.param)


def test_config_facts(fixture_model):
    config, generator, _ = fixture_model
    assert generator.num_ws == config["num_ws"]
    assert generator.block_resolutions == config["block_resolutions"]
    assert {str(k): v for k, v in generator.synthesis.channels.items()} == config["block_channels"]


@pytest.mark.parametrize("psi,key", [(0.7, "ws_psi07"), (1.0, "ws_psi1")])
def test_mapping_matches_official(fixture_model, psi, key):
    _, generator, ref = fixture_model
    for i in range(len(ref["seeds"])):
        ws = generator.mapping(torch.from_numpy(ref["z"][i : i + 1]), None, truncation_psi=psi)
        assert rel_l2(ws, ref[key][i : i + 1]) <= TOLERANCE


@pytest.mark.parametrize(
    "noise_mode,key", [("const", "img_psi07"), ("none", "img_psi07_noise_none")]
)
def test_images_match_official(fixture_model, noise_mode, key):
    _, generator, ref = fixture_model
    for i in range(len(ref["seeds"])):
        img = generator.synthesis(
            torch.from_numpy(ref["ws_psi07"][i : i + 1]), noise_mode=noise_mode
        )
        assert rel_l2(img, ref[key][i : i + 1]) <= TOLERANCE


def test_batched_synthesis_matches_official(fixture_model):
    """A batch takes the shared-weight (training) path; it must compute the same images."""
    _, generator, ref = fixture_model
    img = generator.synthesis(torch.from_numpy(ref["ws_psi07"]))
    assert rel_l2(img, ref["img_psi07"]) <= TOLERANCE


def test_feature_block_matches_official(fixture_model):
    _, generator, ref = fixture_model
    res = int(ref["feature_block_res"])
    for i in range(len(ref["seeds"])):
        ws = torch.from_numpy(ref["ws_psi07"][i : i + 1])
        x, img = run_blocks(generator.synthesis, ws, until=res)
        assert rel_l2(x, ref["feat"][i : i + 1]) <= TOLERANCE
        assert rel_l2(img, ref["feat_img"][i : i + 1]) <= TOLERANCE


def test_display_image_matches_official(fixture_model):
    _, generator, ref = fixture_model
    image = to_uint8_image(generator.synthesis(torch.from_numpy(ref["ws_psi07"][:1])))
    expected = ref["img_psi07_uint8"][0]
    assert image.shape == expected.shape and image.dtype == np.uint8
    difference = np.abs(image.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.99


def test_every_block_matches_official_tiny64(shared_fixtures):
    _, generator, ref = load_fixture(shared_fixtures, "tiny64")
    ws = torch.from_numpy(ref["ws_psi07"][:1])
    x = img = None
    previous = None
    for res in generator.block_resolutions:
        x, img = run_blocks(generator.synthesis, ws, until=res, after=previous, x=x, img=img)
        assert rel_l2(x, ref[f"dbg_seed0_b{res}_x"]) <= TOLERANCE, res
        assert rel_l2(img, ref[f"dbg_seed0_b{res}_img"]) <= TOLERANCE, res
        previous = res


def test_truncation_cutoff_only_truncates_first_ws(shared_fixtures):
    _, generator, ref = load_fixture(shared_fixtures, "tiny64")
    z = torch.from_numpy(ref["z"][:1])
    ws = generator.mapping(z, None, truncation_psi=0.7, truncation_cutoff=4)
    assert rel_l2(ws[:, :4], ref["ws_psi07"][:1, :4]) <= TOLERANCE
    assert rel_l2(ws[:, 4:], ref["ws_psi1"][:1, 4:]) <= TOLERANCE


def test_flat_and_nested_synthesis_kwargs_build_the_same_network():
    nested = Generator(
        8,
        0,
        16,
        16,
        3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 256, "channel_max": 32},
    )
    flat = Generator(
        8,
        0,
        16,
        16,
        3,
        mapping_kwargs={"num_layers": 2},
        channel_base=256,
        channel_max=32,
        fused_modconv_default="inference_only",
    )
    assert nested.state_dict().keys() == flat.state_dict().keys()
    assert nested.synthesis.channels == flat.synthesis.channels == {4: 32, 8: 32, 16: 16}
    assert nested.num_ws == 6


def test_conditional_generator_needs_a_label():
    generator = Generator(
        8, 3, 16, 8, 3, mapping_kwargs={"num_layers": 1}, channel_base=64, channel_max=8
    )
    assert "mapping.embed.weight" in generator.state_dict()
    ws = generator.mapping(torch.randn(2, 8), torch.eye(3)[:2])
    assert ws.shape == (2, generator.num_ws, 16)
    with pytest.raises(ModelError, match="class label"):
        generator.mapping(torch.randn(1, 8), None)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"img_resolution": 48}, "power of two"),
        ({"architecture": "resnet"}, "skip"),
    ],
)
def test_unsupported_configs_are_refused(kwargs, message):
    config = dict(z_dim=8, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=64)
    config.update(kwargs)
    with pytest.raises(ModelError, match=message):
        Generator(**config)


def test_grayscale_display_image_is_rgb():
    generator = Generator(8, 0, 16, 8, 1, channel_base=64, channel_max=8).eval()
    image = to_uint8_image(generator(torch.randn(1, 8)))
    assert image.shape == (8, 8, 3)
    assert (image[..., 0] == image[..., 2]).all()


def test_training_mode_tracks_the_average_w():
    generator = Generator(8, 0, 16, 8, 3, mapping_kwargs={"num_layers": 2}, channel_base=64)
    z = torch.randn(4, 8)
    generator.train()
    ws = generator.mapping(z)
    assert torch.allclose(generator.mapping.w_avg, ws[:, 0].mean(0) * (1 - 0.995), atol=1e-7)
    before = generator.mapping.w_avg.clone()
    generator.mapping(z, skip_w_avg_update=True)
    assert torch.equal(generator.mapping.w_avg, before)
    generator.eval()
    generator.mapping(z)
    assert torch.equal(generator.mapping.w_avg, before)


def test_random_noise_varies_and_const_noise_does_not(shared_fixtures):
    _, generator, ref = load_fixture(shared_fixtures, "tiny64")
    ws = torch.from_numpy(ref["ws_psi07"][:1])
    first, second = (generator.synthesis(ws, noise_mode="random") for _ in range(2))
    assert rel_l2(first, second.numpy()) > 1e-3
    assert torch.equal(generator.synthesis(ws), generator.synthesis(ws))
