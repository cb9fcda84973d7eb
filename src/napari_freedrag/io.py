"""Files in and out: user images, edited images that carry their provenance, JSON reports.

Edited images are generated content. Every image this package writes says so inside the
file (PNG text chunks, TIFF ImageDescription), with the model and the drag instruction
that made it, so an exported file cannot silently pass for an acquisition.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
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
#: The most decoded pixel data :func:`read_image` accepts (Pillow refuses bombs itself).
MAX_IMAGE_BYTES = 2 * 2**30


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

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                nbytes = int(np.prod(series.shape, dtype=object)) * series.dtype.itemsize
                if nbytes > MAX_IMAGE_BYTES:
                    raise InputError(
                        f"image {path.name} declares {nbytes / 2**30:.1f} GiB of pixels, over "
                        f"the {MAX_IMAGE_BYTES // 2**30} GiB an edit reads; crop it first"
                    )
                data = series.asarray()
        else:
            import imageio.v3 as iio

            data = iio.imread(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt or truncated files raise many types
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


def jsonable(value: Any, limit: int | None = None) -> Any:
    """``value`` in plain JSON types: the one converter for reports, metadata and configs.

    Mappings, sequences, dataclasses, numpy and torch values, paths are converted; NaN and
    inf become ``None`` (JSON has neither); anything else becomes its ``str``. ``limit``
    caps the number of values visited (a ValueError past it), for data read from files.
    """
    visited = [0]

    def convert(item: Any) -> Any:
        visited[0] += 1
        if limit is not None and visited[0] > limit:
            raise ValueError(f"more than {limit} values")
        if isinstance(item, Mapping):
            return {str(k): convert(v) for k, v in item.items()}
        if isinstance(item, list | tuple | set | frozenset):
            return [convert(v) for v in item]
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            return {f.name: convert(getattr(item, f.name)) for f in dataclasses.fields(item)}
        if isinstance(item, Path):
            return str(item)
        if isinstance(item, np.generic):
            item = item.item()
        if isinstance(item, np.ndarray):
            return convert(item.tolist())
        if type(item).__module__ == "torch" and hasattr(item, "detach"):
            return convert(item.detach().cpu().numpy())
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if item is None or isinstance(item, bool | int | float | str):
            return item
        return str(item)

    return convert(value)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; on success it replaces ``path`` in one step.

    An existing file is therefore replaced only by a complete new one: an error or Ctrl-C
    while writing leaves the old file as it was and no partial file behind. OSErrors
    become one :class:`InputError` naming the file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}"
        )
        os.close(handle)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    temp = Path(temp_name)
    try:
        yield temp
        os.chmod(temp, _mode_for(path))
        os.replace(temp, path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        temp.unlink(missing_ok=True)


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or what a plain ``open`` would give a new file."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return Path(path)


def write_report(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Write ``report`` as indented JSON (numpy arrays and scalars converted), atomically."""
    text = json.dumps(jsonable(report), indent=2) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_latent(path: str | Path, latent: Any) -> Path:
    """Write a latent as a ``.npy`` file at exactly ``path`` (no suffix added), atomically."""
    with atomic_path(path) as temp, open(temp, "wb") as file:
        np.save(file, np.asarray(latent), allow_pickle=False)
    return Path(path)


def check_output_path(path: str | Path, what: str, suffixes: tuple[str, ...] | None) -> Path:
    """Refuse, before any work, an output that cannot be written: the folder it goes in
    must exist and be writable, the suffix known, and the path not an existing folder."""
    path = Path(path).expanduser()
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise InputError(
            f"{what} {path}: use a name ending in {' or '.join(suffixes)} "
            f"(not {path.suffix or 'no suffix'})"
        )
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} {path}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}: folder {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{what} {path}: the file exists and is read-only")
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
        **jsonable(dict(provenance)),
    }
    with atomic_path(path) as temp:
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
            Image.fromarray(image).save(temp, format="PNG", pnginfo=info)
        else:
            import tifffile

            metadata = {"Info": json.dumps(record)}
            resolution = None
            if pixel_size is not None:
                resolution = (1.0 / float(pixel_size[1]), 1.0 / float(pixel_size[0]))
                metadata["unit"] = unit or "pixel"
            tifffile.imwrite(
                temp, image, imagej=True, resolution=resolution, metadata=metadata,
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
