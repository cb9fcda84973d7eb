"""``gen.invert`` for StyleGAN2: a real image projected into a tiny random-weight model."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

import napari_freedrag as nfd
from napari_freedrag.errors import InputError, ModelError
from napari_freedrag.imaging import from_model_rgb
from napari_freedrag.models.stylegan2.projection import similarity
from napari_freedrag.testing import save_random_checkpoint

#: Measured: W projections of this model's seed-3/5 samples reach 28-29 dB after 60 steps.
OWN_SAMPLE_PSNR = 26.0


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def gen(tiny_path):
    return nfd.load_generator(str(tiny_path), device="cpu")


def _run(steps):
    """Every step of a projection, and its start state."""
    seen = []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as end:
            return seen, end.value


@pytest.mark.parametrize("seed", [3, 5])
def test_own_sample_is_recovered_and_the_loss_falls(gen, seed):
    source = gen.sample(seed).image
    steps, state = _run(gen.invert_steps(source, mode="w", steps=60))
    assert [s.index for s in steps] == list(range(1, 61)) and steps[0].total == 60
    pixel = [s.losses["pixel"] for s in steps]
    assert np.mean(pixel[-5:]) < 0.2 * np.mean(pixel[:5])
    assert np.mean([s.loss for s in steps[-5:]]) < 0.01 * np.mean([s.loss for s in steps[:5]])
    record = state.info["projection"]
    assert record["psnr"] > OWN_SAMPLE_PSNR and record["ssim"] > 0.9
    early = gen.invert(source, mode="w", steps=60, stop=_after(5))
    assert early.info["projection"]["psnr"] < record["psnr"] - 3  # PSNR rises with the steps
    assert record["psnr"] == pytest.approx(similarity(source, state.image)["psnr"])


def _after(count):
    calls = iter(range(10**6))
    return lambda: next(calls) >= count


def test_stop_keeps_a_usable_state_and_drag_continues_from_it(gen):
    source = gen.sample(4).image
    state = gen.invert(source, mode="w+", steps=40, stop=_after(7))
    record = state.info["projection"]
    assert record["stopped"] and record["steps"] == 7 and record["requested_steps"] == 40
    assert state.image.shape == (32, 32, 3) and np.isfinite(state.latent.numpy()).all()
    preview = nfd.drag(gen, state, [[16, 16]], [[16, 16]], max_steps=0).image
    np.testing.assert_array_equal(preview, state.image)
    result = nfd.drag(gen, state, [[12, 12]], [[12, 17]], max_steps=3)
    assert result.steps == 3 and result.state.extra["generator"] is state.extra["generator"]


def test_pti_tunes_a_copy_that_the_drag_uses_and_leaves_the_file_alone(gen, tiny_path):
    before_file = hashlib.sha256(tiny_path.read_bytes()).hexdigest()
    before = {k: v.clone() for k, v in gen.generator.state_dict().items()}
    source = gen.sample(6).image
    plain = gen.invert(source, mode="w+", steps=30)
    tuned = gen.invert(source, mode="pti", steps=30, pti_steps=30)
    assert tuned.info["projection"]["steps"] == 60
    assert tuned.info["projection"]["psnr"] > plain.info["projection"]["psnr"] + 1
    for name, value in gen.generator.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)
    assert hashlib.sha256(tiny_path.read_bytes()).hexdigest() == before_file
    session = gen.session(tuned, None, "freedrag")
    np.testing.assert_array_equal(session.render(session.latent.detach()), tuned.image)
    assert not np.array_equal(gen.render(tuned.latent), tuned.image)  # needs the tuned copy


def test_other_sizes_and_channels_are_converted_and_stated(gen):
    rng = np.random.default_rng(11)
    gray = (rng.random((48, 40)) * 3000 + 500).astype(np.uint16)
    state = gen.invert(gray, mode="w", steps=3)
    conversion = state.info["projection"]["conversion"]
    assert conversion["crop"] == [4, 44, 0, 40]
    assert conversion["resize"] == [[40, 40], [32, 32]]
    assert conversion["channels"].startswith("gray replicated to RGB")
    assert state.image_size == (32, 32)
    back = from_model_rgb(state.image, state.extra["source"])
    assert back.shape == (40, 40) and back.dtype == np.uint16
    json.dumps(state.info)  # provenance is plain JSON
    for key in ("mode", "steps", "final_losses", "psnr", "ssim"):
        assert key in state.info["projection"]


@pytest.mark.parametrize(
    ("image", "options", "error", "phrase"),
    [
        (np.zeros((1, 1, 3), np.uint8), {}, InputError, "at least 8x8"),
        (np.full((32, 32), np.nan), {}, InputError, "NaN"),
        (np.zeros((32, 32, 3), np.uint8), {"perceptual": "discriminator"}, ModelError,
         "no discriminator"),
        (np.zeros((32, 32, 3), np.uint8), {"mode": "z"}, InputError, "choose w, w\\+ or pti"),
        (np.zeros((32, 32, 3), np.uint8), {"steps": 0}, InputError, ">= 1"),
        (np.zeros((32, 32, 3), np.uint8), {"lora_steps": 5}, InputError, "pti"),
    ],
)  # fmt: skip
def test_bad_input_gets_one_clear_message(gen, image, options, error, phrase):
    with pytest.raises(error, match=phrase):
        gen.invert(image, **options)
