"""Image and report files: what users read back in other tools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_freedrag.errors import InputError
from napari_freedrag.io import (
    GENERATED_NOTICE,
    provenance_from_report,
    read_image,
    read_mask,
    read_provenance,
    write_image,
    write_report,
)

RNG = np.random.default_rng(0)


@pytest.fixture
def rgb() -> np.ndarray:
    return RNG.integers(0, 256, size=(12, 17, 3), dtype=np.uint8)


def test_png_round_trip_keeps_pixels_and_provenance(tmp_path: Path, rgb: np.ndarray):
    path = write_image(
        tmp_path / "out" / "edit.png",
        rgb,
        {"model": "cells", "instruction": "drag (1, 2) -> (3, 4)", "parameters": {"l": 0.3}},
    )
    np.testing.assert_array_equal(read_image(path), rgb)
    record = read_provenance(path)
    assert record["model"] == "cells"
    assert record["instruction"] == "drag (1, 2) -> (3, 4)"
    assert record["parameters"] == {"l": 0.3}
    assert record["generated_by"].startswith("napari-freedrag")
    # Plain PNG viewers show these chunks without knowing our JSON key.
    with Image.open(path) as img:
        assert img.text["Description"] == GENERATED_NOTICE
        assert img.text["Model"] == "cells"
        assert img.text["Instruction"] == "drag (1, 2) -> (3, 4)"


def test_tiff_round_trip_keeps_pixels_and_provenance(tmp_path: Path, rgb: np.ndarray):
    path = write_image(tmp_path / "edit.tif", rgb, {"model": "faces"})
    np.testing.assert_array_equal(read_image(path), rgb)
    assert read_provenance(path)["model"] == "faces"
    assert read_provenance(path)["notice"] == GENERATED_NOTICE


def test_read_image_keeps_dtype_and_channels(tmp_path: Path):
    gray16 = RNG.integers(0, 65536, size=(9, 11), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", gray16)
    floats = RNG.random((5, 6), dtype=np.float32)
    tifffile.imwrite(tmp_path / "f.tiff", floats)
    rgba = RNG.integers(0, 256, size=(7, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")

    got16 = read_image(tmp_path / "g.tif")
    assert got16.dtype == np.uint16
    np.testing.assert_array_equal(got16, gray16)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tiff"), floats)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba)


def test_jpeg_reads_approximately(tmp_path: Path):
    flat = np.full((16, 16, 3), 120, np.uint8)
    Image.fromarray(flat).save(tmp_path / "x.jpg", quality=95)
    got = read_image(tmp_path / "x.jpg")
    assert got.shape == (16, 16, 3)
    assert np.abs(got.astype(int) - 120).max() <= 2


@pytest.mark.parametrize(
    ("name", "content", "phrase"),
    [
        ("missing.png", None, "not found"),
        ("broken.png", b"\x89PNG\r\n\x1a\n garbage", "cannot read image"),
        ("notes.txt", b"hello", "unsupported image type"),
    ],
)
def test_unreadable_images_raise_input_error(tmp_path: Path, name, content, phrase):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=phrase) as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_write_image_refuses_formats_without_provenance_and_bad_arrays(tmp_path: Path, rgb):
    with pytest.raises(InputError, match=r"\.png or \.tif"):
        write_image(tmp_path / "x.jpg", rgb, {})
    with pytest.raises(InputError, match="uint8"):
        write_image(tmp_path / "x.png", rgb.astype(np.float32), {})
    assert not (tmp_path / "x.png").exists()


def test_read_mask_nonzero_is_editable_and_shape_is_checked(tmp_path: Path):
    mask_rgb = np.zeros((10, 12, 3), np.uint8)
    mask_rgb[2:5, 3:7, 1] = 255
    Image.fromarray(mask_rgb).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", shape=(10, 12))
    assert mask.dtype == bool
    assert mask.sum() == 12 and mask[2:5, 3:7].all()

    with pytest.raises(InputError, match="10x12 but the image is 64x64"):
        read_mask(tmp_path / "m.png", shape=(64, 64))


def test_report_is_plain_json(tmp_path: Path):
    torch = pytest.importorskip("torch")
    report = {
        "points": np.array([[1.5, 2.0]], np.float32),
        "loss": np.float32(0.25),
        "steps": np.int64(3),
        "converged": np.bool_(True),
        "nan": float("nan"),
        "path": tmp_path,
        "pair": (1, 2),
        "tensor": torch.tensor([1.0, 2.0]),
    }
    path = write_report(tmp_path / "deep" / "r.json", report)
    data = json.loads(path.read_text())
    assert data == {
        "points": [[1.5, 2.0]],
        "loss": 0.25,
        "steps": 3,
        "converged": True,
        "nan": None,
        "path": str(tmp_path),
        "pair": [1, 2],
        "tensor": [1.0, 2.0],
    }


def test_provenance_from_report_states_the_instruction():
    report = {
        "model": "cells",
        "method": "freedrag",
        "seed": 3,
        "handles": [[10.0, 20.0], [5, 6]],
        "targets": [[10.0, 40.5], [7, 8]],
        "parameters": {"l": 0.3, "d": 3},
        "trace": [{"step": 1}],
    }
    record = provenance_from_report(report)
    assert record["instruction"] == "drag (10, 20) -> (10, 40.5); drag (5, 6) -> (7, 8)"
    assert record["model"] == "cells" and record["seed"] == 3
    assert record["parameters"] == {"l": 0.3, "d": 3}
    assert "trace" not in record


def test_one_json_converter_for_reports_metadata_and_configs(tmp_path):
    import dataclasses
    import json

    import torch

    from napari_freedrag.io import jsonable

    @dataclasses.dataclass
    class Params:
        steps: int
        where: Path

    value = {
        1: (np.float32(0.5), np.arange(2)),
        "t": torch.ones(2),
        "p": Params(3, tmp_path),
        "bad": [float("nan"), float("inf")],
        "s": {2},
        "other": object,
    }
    plain = jsonable(value)
    json.dumps(plain, allow_nan=False)  # strict JSON
    assert plain["1"] == [0.5, [0, 1]] and plain["t"] == [1.0, 1.0]
    assert plain["p"] == {"steps": 3, "where": str(tmp_path)}
    assert plain["bad"] == [None, None] and plain["s"] == [2]
    with pytest.raises(ValueError, match="more than 10 values"):
        jsonable(list(range(20)), limit=10)


def test_writes_are_atomic_and_keep_the_file_mode(tmp_path, monkeypatch):
    import os

    from napari_freedrag.errors import InputError
    from napari_freedrag.io import atomic_path, write_report

    path = tmp_path / "report.json"
    write_report(path, {"a": 1})
    os.chmod(path, 0o640)
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as temp:
        temp.write_text("half a rep")
        raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temp file left
    write_report(path, {"a": 2})
    assert (path.stat().st_mode & 0o777) == 0o640
    with pytest.raises(InputError, match="cannot write"):
        write_report(tmp_path / "report.json" / "below-a-file.json", {})
