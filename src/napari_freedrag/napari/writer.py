"""Saving edits: the Save button and napari's File > Save Selected Layers (npe2 writer).

Either way the file holds the edit in its source's form (dtype, channels, full range),
the pixel size and unit, the provenance and the generated-content notice.  A user's own
layer saved through this writer is written as napari itself would write it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_freedrag.errors import InputError
from napari_freedrag.napari.layers import MARKER
from napari_freedrag.napari.placement import Placement

#: pint's unit names (napari's) -> the short names ImageJ reads.
_UNIT_NAMES = {"micrometer": "um", "nanometer": "nm", "millimeter": "mm", "meter": "m"}


def write_edit(path, image: np.ndarray, entry: dict[str, Any], placement: Placement) -> Path:
    """Write one edit (a plane in its source's form) with its provenance, or raise InputError.

    Any failure (no name, unknown extension, unwritable place) is one InputError.
    """
    from napari_freedrag.io import provenance_from_report, write_image

    if not str(path or "").strip() or Path(path).is_dir():
        raise InputError("choose a file name ending in .tif or .png to save the edit to")
    path = Path(path)
    instruction = entry.get("instruction") or {}
    provenance = {
        **provenance_from_report({**entry, **instruction}),
        "source": entry.get("source"),
        "placement": entry.get("placement"),
        "edit": entry,
    }
    unit = placement.unit()
    try:
        return write_image(
            path, np.asarray(image), provenance,
            pixel_size=placement.pixel_size(), unit=_UNIT_NAMES.get(unit, unit),
        )  # fmt: skip
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def napari_write_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer for one image layer (File > Save Selected Layers, .tif)."""
    metadata = meta.get("metadata") or {}
    if metadata.get(MARKER) is None:  # a user's layer: write it as napari does
        from napari_builtins.io import napari_write_image

        written = napari_write_image(path, data, meta)
        return [str(written)] if written else []
    scale = tuple(meta.get("scale") or (1.0, 1.0))
    units = meta.get("units")
    placement = Placement(
        size=tuple(np.shape(data)[-3:-1] if meta.get("rgb") else np.shape(data)[-2:]),
        scale=scale,
        units=tuple(str(u) for u in units) if units is not None else None,
    )
    image = np.asarray(data)
    image = image.reshape(image.shape[-3:] if meta.get("rgb") else image.shape[-2:])
    return [str(write_edit(path, image, metadata.get("provenance") or {}, placement))]
