"""``napari-freedrag edit --image`` with a StyleGAN2 model: project, then drag (or not)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_freedrag.cli import main
from napari_freedrag.io import read_image
from napari_freedrag.models.stylegan2.projection import similarity
from napari_freedrag.testing import save_random_checkpoint
from napari_freedrag.training.cells.dataset import make_cell_image


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def real_image(tmp_path):
    """A cells-dataset image at 64 px (twice the model's size): not a model sample."""
    path = tmp_path / "cells.png"
    Image.fromarray(make_cell_image(101).image).save(path)
    return path


def _edit(tiny_model, real_image, tmp_path, *extra):
    out, report = tmp_path / "out.png", tmp_path / "out.json"
    argv = ["edit", "--model", str(tiny_model), "--device", "cpu", "--image", str(real_image)]
    status = main([*argv, "--out", str(out), "--report", str(report), *extra])
    return status, out, json.loads(report.read_text()) if report.exists() else None


def test_zero_drag_steps_write_the_reconstruction(tiny_model, real_image, tmp_path, capsys):
    status, out, report = _edit(
        tiny_model, real_image, tmp_path, "--invert-steps", "20", "--invert-mode", "w",
        "--drag", "16,16:16,20", "--max-steps", "0",
    )  # fmt: skip
    printed = capsys.readouterr()
    assert status == 0, printed.err
    record = report["start"]["projection"]
    assert record["mode"] == "w" and record["steps"] == 20
    assert record["conversion"]["resize"] == [[64, 64], [32, 32]]
    assert set(record["final_losses"]) == {"loss", "perceptual", "pixel"}
    written = read_image(out)
    assert written.shape == (32, 32, 3) and report["steps"] == 0
    source = np.asarray(Image.open(real_image).resize((32, 32), Image.BILINEAR))
    # The file holds the reconstruction the report measured (PSNR against the resized source).
    assert abs(similarity(source, written)["psnr"] - record["psnr"]) < 1.5
    assert f"PSNR {record['psnr']:.2f} dB" in printed.out


def test_projected_image_is_dragged(tiny_model, real_image, tmp_path, capsys):
    status, out, report = _edit(
        tiny_model, real_image, tmp_path, "--invert-steps", "10", "--invert-mode", "pti",
        "--drag", "16,16:16,20", "--max-steps", "3",
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert report["steps"] == 3 and report["start"]["projection"]["mode"] == "pti"
    assert report["start"]["projection"]["steps"] == 15  # 10 latent + 5 PTI steps
    assert read_image(out).shape == (32, 32, 3)
