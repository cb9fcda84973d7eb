"""Files in and out: user images, edited images that carry their provenance, JSON reports.

Edited images are generated content. Every image this package writes says so inside the
file (PNG text chunks, TIFF ImageDescription), with the model and the drag instruction
that made it, so an exported file cannot silently pass for an acquisition.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_freedrag.errors import InputError

GENERATED_NOTICE = (
    "Generated content: this image was edited by a generative model (napari-freedrag); "
    "it is not an acquisition."
)
#: PNG text key holding the whole provenance record as JSON.
PROVENANCE_KEY = "napari-freedrag"
READABLE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
WRITABLE_SUFFIXES = (".png", ".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """The pixels of a PNG/TIFF/JPEG/BMP file as stored (dtype and channels untouched)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path} (check the path)")
    suffix = path.suffix.lower()
    if suffix not in READABLE_SUFFIXES:
        raise InputError(
            f"cannot read {path.name}: unsupported image type {suffix or '(none)'}; "
            f"use one of {', '.join(READABLE_SUFFIXES)}"
        )
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        else:
            import imageio.v3 as iio

            data = iio.imread(path)
    except Exception as exc:  # corrupt or truncated files raise many different types
        raise InputError(f"cannot read image {path}: {exc} (is the file complete?)") from exc
    return np.asarray(data)


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A boolean ``(H, W)`` mask from an image file: nonzero in any channel = editable.

    ``shape`` is the image size the mask must match; a mismatch is the user's mistake.
    """
    data = read_image(path)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        if data.shape[-1] == 4:
            data = data[..., :3]
        data = data.any(axis=-1)
    if data.ndim != 2:
        raise InputError(
            f"mask {Path(path).name} has shape {data.shape}; a mask must be one 2D image "
            "(grayscale or RGB, nonzero = editable)"
        )
    if shape is not None and tuple(data.shape) != tuple(shape):
        raise InputError(
            f"mask {Path(path).name} is {data.shape[0]}x{data.shape[1]} but the image is "
            f"{shape[0]}x{shape[1]}; paint the mask at the image size"
        )
    return data != 0


def _jsonable(value: Any) -> Any:
    """Plain-JSON version of reports: numpy, torch, paths, tuples and NaN made safe."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if type(value).__module__ == "torch" and hasattr(value, "detach"):
        return _jsonable(value.detach().cpu().numpy())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; readers must not choke on the report
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_report(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Write ``report`` as indented JSON (numpy arrays and scalars converted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(report), indent=2) + "\n", encoding="utf-8")
    return path


def provenance_from_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance an exported image carries, taken from an edit's report."""
    handles = report.get("handles") or []
    targets = report.get("targets") or []
    instruction = "; ".join(
        f"drag ({h[0]:g}, {h[1]:g}) -> ({t[0]:g}, {t[1]:g})"
        for h, t in zip(np.asarray(handles, float), np.asarray(targets, float), strict=False)
    )
    keys = ("model", "method", "seed", "steps", "converged", "device", "parameters")
    record = {k: report[k] for k in keys if k in report}
    record["instruction"] = instruction or "none (start image)"
    return record


def write_image(
    path: str | Path,
    rgb: np.ndarray,
    provenance: Mapping[str, Any],
    *,
    pixel_size: tuple[float, float] | None = None,
    unit: str | None = None,
) -> Path:
    """Write an edited image with its provenance inside the file (PNG or TIFF).

    PNG takes ``(H, W[, 3|4])`` uint8; TIFF also keeps uint16 and float32 (gray), with
    ``pixel_size`` ``(row, col)`` in ``unit`` as ImageJ metadata. The file says it is
    generated content and carries ``provenance`` (model, instruction, ...) as JSON.
    """
    from napari_freedrag import __version__

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE_SUFFIXES:
        raise InputError(
            f"cannot write {path.name}: use a .png or .tif name (these formats keep the "
            "provenance record inside the file)"
        )
    image = np.asarray(rgb)
    tiff_gray = suffix != ".png" and image.ndim == 2 and image.dtype in TIFF_GRAY_DTYPES
    if not tiff_gray and (
        image.dtype != np.uint8
        or not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4)))
    ):
        raise InputError(
            f"cannot write a {_shape_text(image)} {image.dtype} image to {path.name}: PNG "
            "takes uint8 gray or RGB; TIFF also takes uint16 or float32 gray (use .tif)"
        )
    record = {
        "generated_by": f"napari-freedrag {__version__}",
        "notice": GENERATED_NOTICE,
        **_jsonable(dict(provenance)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Software", record["generated_by"])
        info.add_itxt("Description", GENERATED_NOTICE)
        for key in ("model", "instruction"):
            if key in record:
                info.add_itxt(key.capitalize(), str(record[key]))
        info.add_itxt(PROVENANCE_KEY, json.dumps(record))
        Image.fromarray(image).save(path, pnginfo=info)
    else:
        import tifffile

        metadata = {"Info": json.dumps(record)}
        resolution = None
        if pixel_size is not None:
            resolution = (1.0 / float(pixel_size[1]), 1.0 / float(pixel_size[0]))
            metadata["unit"] = unit or "pixel"
        tifffile.imwrite(
            path, image, imagej=True, resolution=resolution, metadata=metadata,
            photometric="rgb" if image.ndim == 3 else "minisblack",
        )  # fmt: skip
    return path


#: Gray dtypes a TIFF keeps as they are (those ImageJ reads).
TIFF_GRAY_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def _shape_text(image: np.ndarray) -> str:
    return "x".join(str(s) for s in image.shape)


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance record a file written by :func:`write_image` carries ({} if none)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path} (check the path)")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            text = (tif.imagej_metadata or {}).get("Info") or tif.pages[0].description
    else:
        from PIL import Image

        with Image.open(path) as img:
            text = getattr(img, "text", {}).get(PROVENANCE_KEY, "")
    try:
        record = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}
