"""Conversions between a user's image and the RGB uint8 image a generative model works on.

Scientific images come gray, RGB or RGBA, as uint8, uint16 or float, in any size, often
as one slice of a 3D or time-lapse stack. A model sees ``(H, W, 3)`` uint8. This module
maps a user's 2D image to that form, remembers what it came from (:class:`SourceInfo`),
and maps an edited result back to the source's shape, channels, dtype and value range,
so that an edit can be compared with, and stored beside, the original data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from skimage.transform import resize

from napari_freedrag.errors import InputError

_CHANNELS = {2: "gray", 3: "rgb", 4: "rgba"}


@dataclass(frozen=True)
class SourceInfo:
    """What a model image was made from: enough to map a result back to the source's form."""

    shape: tuple[int, ...]
    dtype: str
    channels: str  # "gray", "rgb" or "rgba"
    value_range: tuple[float, float]
    #: The source's alpha channel (RGBA only), restored unchanged on the way back.
    alpha: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.shape[0]), int(self.shape[1])

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON provenance for reports and layer metadata."""
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "channels": self.channels,
            "value_range": [float(v) for v in self.value_range],
        }


def _channels_of(image: np.ndarray) -> str:
    if image.ndim == 2:
        return "gray"
    if image.ndim == 3 and image.shape[-1] == 1:
        return "gray"
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return _CHANNELS[image.shape[-1]]
    raise InputError(
        f"image of shape {image.shape} is not a 2D image: expected (H, W) gray, (H, W, 3) RGB "
        "or (H, W, 4) RGBA; for a 3D or time-lapse stack pick the 2D slice to edit first "
        "(napari edits the slice on screen)"
    )


def default_value_range(image: np.ndarray) -> tuple[float, float]:
    """The range mapped to 0..255: the full range for uint8/bool, the data's range otherwise.

    uint16 microscopy data rarely spans 0..65535, and float data has no fixed range, so
    their own min and max are used (a constant image gets a range of width 1).
    """
    if image.dtype == np.uint8:
        return 0.0, 255.0
    if image.dtype == bool:
        return 0.0, 1.0
    finite = image[np.isfinite(image)] if np.issubdtype(image.dtype, np.floating) else image
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low, low + 1.0)


def to_model_rgb(
    image: Any, value_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, SourceInfo]:
    """``(H, W, 3)`` uint8 RGB for a model, and the :class:`SourceInfo` to map results back.

    ``value_range`` (e.g. a napari layer's contrast limits) is mapped to 0..255; values
    outside it are clipped. Gray images are repeated into three channels; alpha is set aside.
    """
    image = np.asarray(image)
    if image.size == 0:
        raise InputError("the image is empty: load an image with at least one pixel")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise InputError(
            f"image of dtype {image.dtype} is not numeric: use an integer or float image"
        )
    if np.issubdtype(image.dtype, np.complexfloating):
        raise InputError("complex images cannot be edited: take the magnitude or real part first")
    channels = _channels_of(image)
    low, high = default_value_range(image) if value_range is None else map(float, value_range)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise InputError(
            f"value range {value_range} is not a range: give (low, high) with low < high"
        )
    alpha = image[..., 3].copy() if channels == "rgba" else None
    colour = image.reshape(image.shape[:2] + (-1,))[..., :3].astype(np.float64)
    colour = np.nan_to_num(colour, nan=low, posinf=high, neginf=low)
    scaled = np.clip((colour - low) / (high - low) * 255.0, 0.0, 255.0)
    rgb = np.rint(np.broadcast_to(scaled, image.shape[:2] + (3,))).astype(np.uint8)
    info = SourceInfo(tuple(image.shape), str(image.dtype), channels, (low, high), alpha)
    return np.ascontiguousarray(rgb), info


def from_model_rgb(rgb: np.ndarray, source: SourceInfo) -> np.ndarray:
    """Map a model's ``(h, w, 3)`` uint8 result back to the source's shape, dtype and range."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise InputError(f"expected an (H, W, 3) model image, got shape {rgb.shape}")
    rgb = resize_rgb(rgb, source.size).astype(np.float64)
    low, high = source.value_range
    values = rgb / 255.0 * (high - low) + low
    if source.channels == "gray":
        values = values.mean(axis=-1)
        if len(source.shape) == 3:
            values = values[..., None]
    dtype = np.dtype(source.dtype)
    if dtype == np.bool_:
        out = values >= (low + high) / 2
    elif np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        out = np.clip(np.rint(values), limits.min, limits.max).astype(dtype)
    else:
        out = values.astype(dtype)
    if source.channels == "rgba":
        alpha = source.alpha if source.alpha is not None else np.full(source.size, high)
        out = np.concatenate([out, alpha[..., None].astype(out.dtype)], axis=-1)
    return out


def model_pixels_to_uint8(pixels: Any) -> Any:
    """Model pixels in [-1, 1] as uint8, NVIDIA's way: ``x * 127.5 + 128``, clamped, truncated.

    The one conversion every backend, trainer and metric uses, so that images agree to the
    level. Takes a torch tensor (any shape; returns a uint8 tensor) or a NumPy array.
    """
    if hasattr(pixels, "detach"):  # torch, without importing it here
        return (pixels.detach().float() * 127.5 + 128).clamp(0, 255).byte()
    return np.clip(np.asarray(pixels, np.float32) * 127.5 + 128, 0, 255).astype(np.uint8)


def working_size(image_size: tuple[int, int], native: int, multiple: int = 8) -> tuple[int, int]:
    """The size a model works at: longer side ``native``, aspect kept, sides multiples of 8."""
    height, width = image_size
    if min(height, width) < 1:
        raise InputError(f"image size {image_size} has an empty side")
    scale = native / max(height, width)
    return tuple(
        max(multiple, int(round(side * scale / multiple)) * multiple) for side in (height, width)
    )


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(h, w, 3)`` uint8 image (anti-aliased when shrinking); no-op at equal size."""
    size = (int(size[0]), int(size[1]))
    if rgb.shape[:2] == size:
        return rgb
    shrinking = size[0] < rgb.shape[0] or size[1] < rgb.shape[1]
    out = resize(
        rgb.astype(np.float32),
        size + rgb.shape[2:],
        order=1,
        anti_aliasing=shrinking,
        preserve_range=True,
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --- nD stacks: edit the slice on screen, never the user's array -------------------------


def slice_index(
    shape: tuple[int, ...], current_step: tuple[int, ...], rgb: bool = False
) -> tuple[int, ...]:
    """Indices into the leading (non-displayed) axes of a stack for the slice on screen.

    ``current_step`` is napari's ``viewer.dims.current_step`` in the layer's data axes;
    the last two spatial axes (and a trailing RGB(A) axis when ``rgb``) are displayed.
    """
    layer_ndim = len(shape) - (1 if rgb else 0)
    leading = layer_ndim - 2
    if leading < 0:
        raise InputError(f"layer of shape {shape} has fewer than two spatial axes")
    steps = list(current_step)[-layer_ndim:][:leading] if leading else []
    steps = [0] * (leading - len(steps)) + steps
    return tuple(
        int(min(max(step, 0), size - 1)) for step, size in zip(steps, shape[:leading], strict=True)
    )


def take_slice(data: Any, index: tuple[int, ...]) -> np.ndarray:
    """The 2D (or 2D + colour) image at ``index`` as a NumPy array (works for dask/zarr too)."""
    return np.asarray(data[tuple(index)])


def put_slice(stack: Any, index: tuple[int, ...], image: np.ndarray) -> np.ndarray:
    """A copy of ``stack`` with ``image`` written at ``index``; the original is not touched."""
    out = np.array(stack, copy=True)
    target = out[tuple(index)]
    if target.shape != np.shape(image):
        raise InputError(
            f"edited slice has shape {np.shape(image)}, the stack's slices are {target.shape}"
        )
    out[tuple(index)] = np.asarray(image).astype(out.dtype, copy=False)
    return out
