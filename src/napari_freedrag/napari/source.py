"""A user's image layer as a source: the plane on screen, in the model's form and back.

The plane is mapped to the model's uint8 RGB over its *full* value range (not the
layer's contrast window), so results map back to the same range with nothing clipped;
non-finite pixels are the one exception, and the provenance counts them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_freedrag.engine.run import start_image
from napari_freedrag.errors import InputError, ModelError
from napari_freedrag.io import jsonable
from napari_freedrag.napari.history import Edit, ImageForm
from napari_freedrag.napari.placement import Placement, placement_of

#: Metadata key of a FreeDrag sample image (File > Open Sample): model, seed, truncation.
SAMPLE_KEY = "napari-freedrag-sample"
#: Projection progress reports per second (the status line cannot be read faster).
PROGRESS_HZ = 10.0


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


def source_form(layer, placement: Placement, value_range=None):
    """``(form, rgb, plane)``: how results of ``layer``'s plane are shown, the plane as
    model RGB, and the plane itself.

    ``value_range`` (None: the plane's own full range) is what model 0..255 stands for.
    """
    from napari_freedrag.imaging import take_slice, to_model_rgb

    plane = take_slice(layer.data, placement.plane)
    rgb, info = to_model_rgb(plane, value_range=value_range)
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
    return form, rgb, plane


@dataclass
class StartPlan:
    """What New image will do, worked out in the main thread before any model work."""

    model: Any  # a MODEL string or a backend
    seed: int
    truncation: float
    form: ImageForm | None = None  # None: a sampled image, placed at the model's size
    rgb: np.ndarray | None = None  # the plane to invert (None: sample from the seed)
    plane: np.ndarray | None = None  # the plane as it is, for a StyleGAN2 projection
    source_name: str | None = None

    def start(self, backend, prompt: str = "", lora_steps: int = 0, stop=None, projection=None):
        """The start state (in the worker thread): sampled, or the plane inverted.

        A generator: a StyleGAN2 projection yields ``(step, total)`` (at most
        :data:`PROGRESS_HZ` a second) and honours ``stop`` (the state reached so far is
        kept); the start state is its return value.  ``projection``: options of
        ``invert_steps`` (mode, steps…).
        """
        if self.rgb is None:
            state = backend.sample(int(self.seed), truncation=float(self.truncation))
        elif hasattr(backend, "invert_steps"):
            if lora_steps:
                raise InputError("per-image LoRA is for ldm: models; StyleGAN2 uses mode 'pti'")
            # The plane itself: the projection crops, resizes and replicates it and
            # records how (state.extra["source"] maps results back to the crop's form).
            steps = backend.invert_steps(self.plane, stop=stop, **(projection or {}))
            state = yield from _throttled(steps)
        elif hasattr(backend, "invert"):
            state = backend.invert(self.rgb, prompt=prompt, lora_steps=int(lora_steps))
        else:
            raise ModelError(
                f"model {backend.name!r} cannot edit a real image; choose a StyleGAN2 or "
                "latent-diffusion model, or set 'source image' to none to sample from a seed"
            )
        if state.image is None:
            state.image = start_image(backend, state)
        return state

    def form_of(self, state) -> ImageForm:
        """How ``state``'s results are shown: a projection covers the crop it was made from."""
        size = tuple(int(s) for s in state.image_size)
        if self.form is None:
            return ImageForm(Placement(size))
        projected = (state.info or {}).get("projection")
        if not projected:
            return self.form
        placement = self.form.placement
        crop = projected["conversion"]["crop"]
        if crop is not None:
            top, bottom, left, right = crop
            placement = placement.cropped(top, left, (bottom - top, right - left))
        return replace(self.form, placement=placement, info=state.extra["source"])

    def edit(self, backend, state) -> Edit:
        """The history entry of the new start image."""
        form = self.form_of(state)
        sampled = self.rgb is None
        entry = {
            "generated": True,
            "model": backend.name,
            "kind": backend.kind,
            "device": str(backend.device),
            "seed": int(self.seed) if sampled else None,
            "truncation": float(self.truncation) if sampled else None,
            "source": form.source,
            "placement": form.placement.to_json(),
            "instruction": None,
            "info": jsonable(state.info),
        }
        return Edit(state, backend, form, entry, None, "start")

    def origin(self, state=None) -> str:
        """Where the image came from, for the status line (with a projection's quality)."""
        if self.source_name is None:
            return f"seed {self.seed}"
        plane = self.form.placement.plane
        where = f"plane {list(plane)} of " if plane else ""
        text = f"{where}'{self.source_name}'"
        projected = (state.info.get("projection") if state is not None else None) or {}
        if projected:
            stopped = f" of {projected['requested_steps']}, stopped" if projected["stopped"] else ""
            text += (
                f", projected ({projected['mode']}, {projected['steps']} steps{stopped}): "
                f"PSNR {projected['psnr']:.1f} dB, SSIM {projected['ssim']:.2f}"
            )
        return text


def _throttled(steps):
    """``(index, total)`` of a projection's steps, at most PROGRESS_HZ a second; its value."""
    shown = 0.0
    while True:
        try:
            step = next(steps)
        except StopIteration as end:
            return end.value
        now = time.perf_counter()
        if now - shown >= 1.0 / PROGRESS_HZ or step.index == step.total:
            shown = now
            yield int(step.index), int(step.total)


def plan_start(source, dims_point, model, seed: int, truncation: float) -> StartPlan:
    """Plan New image from a seed, a user's layer, or a FreeDrag sample (its own seed)."""
    if source is None:
        return StartPlan(model, int(seed), float(truncation))
    placement = placement_of(source, dims_point)
    marker = sample_marker(source)
    if marker is None:
        form, rgb, plane = source_form(source, placement)
        return StartPlan(model, int(seed), float(truncation), form, rgb, plane, str(source.name))
    seeds = marker.get("seeds")
    seed = int(seeds[placement.plane[0]]) if seeds else int(marker["seed"])
    form, _, _ = source_form(source, placement, marker.get("value_range"))
    if source.rgb and source.data.dtype == np.uint8:
        form.info = None  # an RGB sample is shown as the model's RGB, as it was made
    model = model if not isinstance(model, str) else marker["model"]
    return StartPlan(model, seed, float(marker["truncation"]), form, None, None, str(source.name))
