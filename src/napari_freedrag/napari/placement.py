"""Where an image FreeDrag shows lives in the world: the source plane's own transform.

A user's layer may be a (z, y, x) stack with a µm scale, a translate, units, a rotation.
The plugin edits the plane on screen and shows the result *at that plane*, so every
layer it owns gets the source's full transform, with leading axes of size one moved to
the plane by its translate.  Coordinates inside the owned layers are then source-plane
pixels, and the world position of every pixel is the source's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Placement:
    """The transform shared by every owned layer of one working image.

    ``plane`` is the data index of each non-displayed axis of the source (empty for a 2D
    source or a sampled image); ``size`` is the plane's ``(rows, cols)``.
    """

    size: tuple[int, int]
    plane: tuple[int, ...] = ()
    scale: tuple[float, ...] = (1.0, 1.0)
    translate: tuple[float, ...] = (0.0, 0.0)
    rotate: tuple | None = None
    shear: tuple | None = None
    affine: tuple | None = None
    units: tuple[str, ...] | None = None
    axis_labels: tuple[str, ...] | None = None
    source_name: str | None = None

    @property
    def ndim(self) -> int:
        return len(self.scale)

    def lead(self, array: np.ndarray) -> np.ndarray:
        """``array`` (a plane) with the size-one leading axes the placement needs."""
        return np.asarray(array).reshape((1,) * len(self.plane) + np.shape(array))

    def layer_kwargs(self) -> dict[str, Any]:
        """``add_image`` / ``add_points`` / ``add_labels`` keywords for this placement."""
        kwargs: dict[str, Any] = {"scale": self.scale, "translate": self.translate}
        for name in ("rotate", "shear", "affine", "units", "axis_labels"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = np.array(value) if name in ("rotate", "shear", "affine") else value
        return kwargs

    def to_json(self) -> dict[str, Any]:
        """The placement in the provenance: which plane, at what pixel size and unit."""
        return {
            "plane_index": list(self.plane),
            "scale": [float(s) for s in self.scale],
            "translate": [float(t) for t in self.translate],
            "units": list(self.units) if self.units is not None else None,
        }

    def cropped(self, top: int, left: int, size: tuple[int, int]) -> Placement:
        """The placement of the ``size`` rectangle of the plane from pixel ``(top, left)``.

        The crop's pixel (0, 0) must land on the plane's pixel (top, left): the offset goes
        through the layer's own scale, rotate and shear (napari's translate comes after them).
        """
        from napari.utils.transforms import CompositeAffine

        linear = CompositeAffine(
            scale=self.scale, rotate=self.rotate, shear=self.shear, ndim=self.ndim
        ).linear_matrix
        offset = np.zeros(self.ndim)
        offset[-2:] = top, left
        translate = np.asarray(self.translate, dtype=float) + linear @ offset
        size = (int(size[0]), int(size[1]))
        return replace(self, size=size, translate=tuple(float(t) for t in translate))

    def pixel_size(self) -> tuple[float, float]:
        """``(row, col)`` pixel size in world units (the last two axes' scale)."""
        return float(self.scale[-2]), float(self.scale[-1])

    def unit(self) -> str | None:
        """The rows' unit, when the source has one (None for plain pixels)."""
        if not self.units:
            return None
        unit = str(self.units[-1])
        return None if unit in ("", "pixel", "pixels", "px") else unit


def placement_of(source, dims_point) -> Placement:
    """The placement of the plane of ``source`` shown at world point ``dims_point``."""
    from napari_freedrag.imaging import slice_index

    data_point = np.round(source.world_to_data(dims_point)).astype(int)
    shape = tuple(source.data.shape)
    plane = slice_index(shape, tuple(data_point), rgb=bool(source.rgb))
    spatial = len(shape) - (1 if source.rgb else 0)
    size = (int(shape[spatial - 2]), int(shape[spatial - 1]))
    translate = np.array(source.translate, dtype=float)
    if plane:
        # Shift the plane's data offset into world through the layer's own linear part.
        offset = np.zeros(spatial)
        offset[: len(plane)] = plane
        moved = np.subtract(source.data_to_world(offset), source.data_to_world(np.zeros(spatial)))
        linear = np.asarray(source.affine.linear_matrix, dtype=float)
        translate = translate + np.linalg.solve(linear, moved)
    units = tuple(str(u) for u in source.units) if getattr(source, "units", None) else None
    labels = getattr(source, "axis_labels", None)
    return Placement(
        size=size,
        plane=tuple(int(i) for i in plane),
        scale=tuple(float(s) for s in source.scale),
        translate=tuple(float(t) for t in translate),
        rotate=_nested(source.rotate),
        shear=_nested(source.shear),
        affine=_nested(source.affine.affine_matrix),
        units=units,
        axis_labels=tuple(str(a) for a in labels) if labels is not None else None,
        source_name=str(source.name),
    )


def _nested(array) -> tuple:
    """An array as nested tuples of floats, so placements compare by value."""
    array = np.asarray(array, dtype=float)
    return tuple(_nested(row) for row in array) if array.ndim > 1 else tuple(map(float, array))
