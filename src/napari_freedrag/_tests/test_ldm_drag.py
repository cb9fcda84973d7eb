"""Drag edits of real images on the tiny SD-1.x pipeline: engine, Python API and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

import napari_freedrag as nfd  # noqa: E402
from napari_freedrag.models.ldm.loading import load_ldm  # noqa: E402

H, W = 40, 56
HANDLE, TARGET = [[20.0, 20.0]], [[20.0, 32.0]]


@pytest.fixture(scope="module")
def gen(tiny_ldm_folder):
    return load_ldm(f"ldm:{tiny_ldm_folder}", "cpu", num_inference_steps=10)


@pytest.fixture(scope="module")
def start(gen):
    rows, cols = np.mgrid[:H, :W]
    image = (200 + 3000 * np.exp(-((rows - 20) ** 2 + (cols - 20) ** 2) / 60.0)).astype(np.uint16)
    return gen.invert(image)


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FREEDRAG_HOME", str(tmp_path / "home"))


def _outside_change(result, start, mask) -> float:
    """Mean |Δ z_t| on the latent pixels outside the editable region."""
    keep = torch.from_numpy(mask == 0).float()[None, None]
    keep = torch.nn.functional.interpolate(keep, size=start.latent.shape[-2:], mode="nearest")
    change = (result.state.latent - start.latent).abs() * keep
    return float(change.sum() / (keep.sum() * start.latent.shape[1]))


@pytest.mark.parametrize("method", ["freedrag", "draggan"])
def test_drag_edits_the_user_sized_image_and_can_continue(gen, start, method):
    result = nfd.drag(gen, start, HANDLE, TARGET, method=method, max_steps=3)
    assert 1 <= result.steps <= 3 and len(result.trace) == result.steps
    assert result.image.shape == (H, W, 3) and result.image.dtype == np.uint8
    assert result.state.image_size == (H, W)
    assert not torch.equal(result.state.latent, start.latent)  # the latent was optimised
    report = result.report
    assert report["model"] == gen.name and report["image_size"] == [H, W]
    assert report["start"]["source"]["dtype"] == "uint16"
    # a second drag continues from the edited latent, keeping the original for attention
    assert result.state.extra.z_t_orig is start.extra.z_t_orig
    again = nfd.drag(gen, result.state, result.points, TARGET, method=method, max_steps=1)
    assert again.image.shape == (H, W, 3)


def test_zero_steps_gives_the_reconstruction(gen, start):
    result = nfd.drag(gen, start, HANDLE, TARGET, max_steps=0)
    np.testing.assert_array_equal(result.image, start.image)


@pytest.mark.parametrize("method", ["freedrag", "draggan"])
def test_mask_keeps_the_latent_outside_it_closer_to_the_original(gen, start, method):
    mask = np.zeros((H, W), np.uint8)
    mask[8:32, 10:44] = 1
    free = nfd.drag(gen, start, HANDLE, TARGET, method=method, max_steps=4)
    masked = nfd.drag(gen, start, HANDLE, TARGET, mask=mask, method=method, max_steps=4)
    without, with_mask = _outside_change(free, start, mask), _outside_change(masked, start, mask)
    assert without > 0
    assert with_mask < 0.5 * without, (with_mask, without)


def test_load_generator_and_cli_edit_a_real_image(tiny_ldm_folder, tmp_path, capsys):
    import imageio.v3 as iio

    from napari_freedrag.cli import main
    from napari_freedrag.io import read_image

    gen = nfd.load_generator(f"ldm:{tiny_ldm_folder}", device="cpu")
    assert gen.kind == "ldm"

    image = np.zeros((H, W, 3), np.uint8)
    image[12:28, 12:28] = (200, 80, 40)
    iio.imwrite(tmp_path / "in.png", image)
    out, report = tmp_path / "out.png", tmp_path / "r.json"
    argv = ["edit", "--model", f"ldm:{tiny_ldm_folder}", "--image", str(tmp_path / "in.png")]
    argv += ["--drag", "20,20:20,30", "--max-steps", "2", "--device", "cpu"]
    status = main([*argv, "--out", str(out), "--report", str(report), "--lora-steps", "1"])
    assert status == 0, capsys.readouterr().err
    assert read_image(out).shape[:2] == (H, W)
    written = json.loads(report.read_text())
    assert written["method"] == "freedrag" and 1 <= written["steps"] <= 2
    assert written["start"]["lora"]["steps"] == 1
    assert written["image_size"] == [H, W]
