"""A user's image layer as a source: the plane on screen, in the model's form and back.

The plane is mapped to the model's uint8 RGB over its *full* value range (not the
layer's contrast window), so results map back to the same range with nothing clipped;
non-finite pixels are the one exception, and the provenance counts them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_freedrag.napari.history import ImageForm
from napari_freedrag.napari.placement import Placement

#: Metadata key of a FreeDrag sample image (File > Open Sample): model, seed, truncation.
SAMPLE_KEY = "napari-freedrag-sample"


def sample_marker(layer) -> dict[str, Any] | None:
    """The seed a FreeDrag sample was made from, or None for any other layer."""
    if layer is None:
        return None
    marker = (getattr(layer, "metadata", None) or {}).get(SAMPLE_KEY)
    return dict(marker) if isinstance(marker, dict) else None


def describe_source(layer, placement: Placement) -> dict[str, Any]:
    """The provenance of a source layer: name, dtype, shape, contrast limits, geometry."""
    return {
        "name": str(layer.name),
        "dtype": str(layer.data.dtype),
        "shape": [int(s) for s in layer.data.shape],
        "rgb": bool(layer.rgb),
        "contrast_limits": [float(c) for c in layer.contrast_limits],
        **placement.to_json(),
    }


def source_form(layer, placement: Placement) -> tuple[ImageForm, np.ndarray]:
    """How results of ``layer``'s plane are shown, and the plane as model RGB."""
    from napari_freedrag.imaging import take_slice, to_model_rgb

    plane = take_slice(layer.data, placement.plane)
    rgb, info = to_model_rgb(plane)
    description = describe_source(layer, placement)
    non_finite = (
        int(np.count_nonzero(~np.isfinite(plane))) if np.issubdtype(plane.dtype, np.floating) else 0
    )
    description["intensity"] = {
        "value_range": [float(v) for v in info.value_range],
        "mapped_to": "model 0..255 and back (the plane's full range, not the contrast window)",
        "clipped_pixels": non_finite,
    }
    colormap = getattr(layer.colormap, "name", "gray")
    form = ImageForm(placement, info, tuple(float(c) for c in layer.contrast_limits), colormap)
    form.source = description
    return form, rgb
