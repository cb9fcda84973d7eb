"""``napari-freedrag edit``: headless edits with a tiny random-weight StyleGAN2 file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_freedrag.cli import main
from napari_freedrag.io import read_image, read_provenance
from napari_freedrag.testing import save_random_checkpoint

REPORT_FIELDS = {
    "model", "method", "seed", "image_size", "handles", "targets", "final_points", "steps",
    "converged", "seconds", "seconds_per_step", "device", "parameters", "versions", "trace",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("models"))


def _edit(model: Path, tmp_path: Path, *extra: str) -> tuple[int, Path, Path]:
    out, report = tmp_path / "edit.png", tmp_path / "edit.json"
    argv = ["edit", "--model", str(model), "--device", "cpu", "--out", str(out)]
    status = main([*argv, "--report", str(report), *extra])
    return status, out, report


def test_zero_steps_writes_the_seed_image_unchanged(tiny_model, tmp_path, capsys):
    status, out, report_path = _edit(
        tiny_model, tmp_path, "--seed", "3", "--drag", "10,10:10,16", "--max-steps", "0"
    )
    assert status == 0, capsys.readouterr().err

    import napari_freedrag as nfd

    gen = nfd.load_generator(str(tiny_model), device="cpu")
    expected = nfd.drag(gen, gen.sample(3), [[10, 10]], [[10, 16]], max_steps=0).image
    np.testing.assert_array_equal(read_image(out), expected)
    assert expected.shape == (32, 32, 3) and expected.std() > 0  # a real image, not blank

    report = json.loads(report_path.read_text())
    assert report["steps"] == 0 and report["trace"] == []
    assert report["seed"] == 3 and report["image_size"] == [32, 32]
    record = read_provenance(out)
    assert record["instruction"] == "drag (10, 10) -> (10, 16)"
    assert "tiny" in str(record["model"])
    assert "generated" in record["notice"].lower()


def test_a_short_edit_reports_every_step_and_can_be_continued(tiny_model, tmp_path, capsys):
    latent = tmp_path / "w.npy"
    frames = tmp_path / "frames"
    status, out, report_path = _edit(
        tiny_model, tmp_path, "--seed", "1", "--drag", "12,12:12,20", "--drag", "20,8:24,8",
        "--max-steps", "6", "--frames", str(frames), "--save-latent", str(latent),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    summary = captured.out.strip().splitlines()
    assert len(summary) == 1 and str(out) in summary[0] and "steps" in summary[0]

    report = json.loads(report_path.read_text())
    assert set(report) >= REPORT_FIELDS
    assert report["method"] == "freedrag"
    assert report["handles"] == [[12, 12], [20, 8]]
    assert report["targets"] == [[12, 20], [24, 8]]
    assert 1 <= report["steps"] <= 6
    assert [entry["step"] for entry in report["trace"]] == list(range(1, report["steps"] + 1))
    assert all(len(entry["points"]) == 2 for entry in report["trace"])
    assert report["final_points"] == report["trace"][-1]["points"]
    assert {"l", "d"} <= set(report["parameters"])
    assert sorted(p.name for p in frames.glob("frame_*.png")), "no preview frame written"

    # The saved latent starts a new edit at exactly the edited image.
    again = tmp_path / "again"
    again.mkdir()
    status, out2, _ = _edit(
        tiny_model, again, "--latent", str(latent), "--drag", "12,12:12,20", "--max-steps", "0"
    )
    assert status == 0, capsys.readouterr().err
    assert np.abs(read_image(out2).astype(int) - read_image(out).astype(int)).max() <= 1


def test_parameters_reach_the_engine(tiny_model, tmp_path, capsys):
    status, _, report_path = _edit(
        tiny_model, tmp_path, "--drag", "10,10:10,14", "--max-steps", "1",
        "--l", "0.5", "--d", "2", "--method", "freedrag",
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    parameters = json.loads(report_path.read_text())["parameters"]
    assert parameters["l"] == 0.5 and parameters["d"] == 2


def test_draggan_method_runs(tiny_model, tmp_path, capsys):
    status, _, report_path = _edit(
        tiny_model, tmp_path, "--drag", "10,10:10,14", "--max-steps", "2", "--method", "draggan"
    )
    assert status == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["method"] == "draggan" and len(report["trace"]) == report["steps"]
