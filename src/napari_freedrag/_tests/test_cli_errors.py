"""User mistakes on the command line: exit status 2 and one clear line, never a traceback."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_freedrag.cli import main
from napari_freedrag.testing import save_random_checkpoint


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("models"))


class _RunsCode:
    """A pickle payload that would create a file if a loader ever executed it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _hostile_pickle(folder: Path) -> tuple[Path, Path]:
    marker = folder / "code-was-run"
    path = folder / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _RunsCode(marker)}))
    return path, marker


def _fails_with_one_line(capsys, argv: list[str], *phrases: str) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("napari-freedrag: error: ")
    assert "Traceback" not in captured.err + captured.out
    for phrase in phrases:
        assert phrase.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("drag", "phrase"),
    [
        ("10,10", "needs a handle and a target"),
        ("10,10:", "needs a handle and a target"),
        ("10;10:20,20", "R0,C0:R1,C1"),
        ("a,b:1,2", "R0,C0:R1,C1"),
        ("1,2,3:4,5", "R0,C0:R1,C1"),
    ],
)
def test_bad_drag_syntax(tiny_model, tmp_path, capsys, drag, phrase):
    out = tmp_path / "x.png"
    argv = ["edit", "--model", str(tiny_model), "--drag", drag, "--out", str(out)]
    _fails_with_one_line(capsys, argv, phrase)
    assert not out.exists()


def test_point_outside_the_image(tiny_model, tmp_path, capsys):
    out = tmp_path / "x.png"
    argv = ["edit", "--model", str(tiny_model), "--drag", "10,10:10,400", "--out", str(out)]
    _fails_with_one_line(capsys, argv, "outside")
    assert not out.exists()


def test_mask_of_the_wrong_shape(tiny_model, tmp_path, capsys):
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(mask)
    argv = ["edit", "--model", str(tiny_model), "--drag", "10,10:10,14"]
    argv += ["--mask", str(mask), "--out", str(tmp_path / "x.png")]
    _fails_with_one_line(capsys, argv, "mask", "10x12", "32x32")


def test_missing_model_file(tmp_path, capsys):
    argv = ["edit", "--model", str(tmp_path / "nowhere.pkl"), "--drag", "1,1:2,2"]
    _fails_with_one_line(capsys, argv + ["--out", str(tmp_path / "x.png")], "nowhere.pkl")


def test_pickle_that_asks_to_run_code_is_refused_unrun(tmp_path, capsys):
    path, marker = _hostile_pickle(tmp_path)
    argv = ["edit", "--model", str(path), "--drag", "1,1:2,2", "--out", str(tmp_path / "x.png")]
    _fails_with_one_line(capsys, argv)
    assert not marker.exists(), "the loader executed code from the pickle"


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        (["--max-steps", "-1"], "--max-steps"),
        (["--l", "-1"], "l"),
        (["--method", "magic"], "invalid choice"),
        (["--seed", "1", "--latent", "w.npy"], "not allowed with"),
        (["--mask", "no-such-mask.png"], "not found"),
    ],
)
def test_bad_options(tiny_model, tmp_path, capsys, extra, phrase):
    argv = ["edit", "--model", str(tiny_model), "--drag", "10,10:10,14"]
    _fails_with_one_line(capsys, [*argv, "--out", str(tmp_path / "x.png"), *extra], phrase)


def test_output_format_without_provenance_is_refused(tiny_model, tmp_path, capsys):
    argv = ["edit", "--model", str(tiny_model), "--drag", "10,10:10,14"]
    _fails_with_one_line(capsys, [*argv, "--out", str(tmp_path / "x.jpg")], ".png or .tif")


def test_unknown_command(capsys):
    _fails_with_one_line(capsys, ["frobnicate"], "invalid choice")


@pytest.mark.parametrize(
    ("size", "extra", "phrase"),
    [((1, 1), [], "at least 8x8"), ((32, 32), ["--invert-steps", "0"], ">= 1"),
     ((32, 32), ["--invert-mode", "z"], "invalid choice")],
)  # fmt: skip
def test_bad_projection_of_a_real_image(tiny_model, tmp_path, capsys, size, extra, phrase):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(photo)
    argv = ["edit", "--model", str(tiny_model), "--image", str(photo), "--drag", "1,1:2,2"]
    _fails_with_one_line(capsys, [*argv, "--out", str(tmp_path / "x.png"), *extra], phrase)
