"""The layers FreeDrag owns in a viewer, found by name and created on demand.

The user's own layers are only ever read.  Every owned layer that holds model output is
named "(generated)" or lives in the ``FreeDrag edits`` stack, and carries
``metadata["generated"] = True`` so that generated content never passes for an
acquisition.

Geometry: all owned 2D layers share the working image's ``scale`` and ``translate`` (the
source layer's, for real-image edits), so a point clicked in world coordinates lands on the
same pixel in every one of them.  Conversions go through ``world_to_data`` so that user
layers with other transforms are still read correctly.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_freedrag.errors import InputError

HANDLES = "handles"
TARGETS = "targets"
MASK = "mask"
ARROWS = "drag arrows"
WORKING = "FreeDrag image (generated)"
EDITS = "FreeDrag edits"
FRAMES = "FreeDrag frames (generated)"
OWNED_NAMES = (HANDLES, TARGETS, MASK, ARROWS, WORKING, EDITS, FRAMES)

HANDLE_COLOR = "#ff4040"
TARGET_COLOR = "#40a0ff"
ARROW_COLOR = "#ffd000"


@dataclass
class EditRecord:
    """The Python-side half of one ``FreeDrag edits`` slice: what Run continues from.

    The layer metadata holds the JSON-able provenance; the start state (latent tensors),
    the backend that can continue from it and the model's RGB image stay here, keyed by
    slice index.
    """

    state: Any  # engine.protocol.StartState
    backend: Any  # engine.protocol.Backend
    rgb: np.ndarray | None = None  # the model's (H, W, 3) uint8 view of this slice


@dataclass
class SourceForm:
    """How a user's layer looked, so generated slices are shown in its form.

    Edits of a uint16 gray microscopy layer come back as uint16 gray with the layer's
    contrast limits and colormap, not as the model's RGB.
    """

    info: Any  # imaging.SourceInfo
    contrast_limits: tuple[float, float]
    colormap: str

    def display(self, rgb: np.ndarray) -> np.ndarray:
        from napari_freedrag.imaging import from_model_rgb

        return from_model_rgb(rgb, self.info)


# Edit stacks outlive any one widget (close and reopen the dock, keep your edits); weak
# keys let a removed layer take its latents with it.
_RECORDS: weakref.WeakKeyDictionary[Any, list[EditRecord]] = weakref.WeakKeyDictionary()
_FORMS: weakref.WeakKeyDictionary[Any, SourceForm | None] = weakref.WeakKeyDictionary()


class OwnedLayers:
    """Find, create and read the plugin's layers in one viewer."""

    def __init__(self, viewer):
        self._viewer = weakref.ref(viewer)

    @property
    def viewer(self):
        return self._viewer()

    # ---------------------------------------------------------------- lookup
    def get(self, name: str):
        """The layer called ``name``, or None."""
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def edits(self):
        return self.get(EDITS)

    @property
    def working(self):
        return self.get(WORKING)

    def records(self) -> list[EditRecord]:
        """The start states behind the slices of the current ``FreeDrag edits`` stack."""
        layer = self.edits
        return _RECORDS.get(layer, []) if layer is not None else []

    def geometry(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(scale, translate)`` of the working image's rows and columns."""
        layer = self.working or self.edits
        if layer is None:
            return (1.0, 1.0), (0.0, 0.0)
        return tuple(layer.scale[-2:]), tuple(layer.translate[-2:])

    # -------------------------------------------------------------- creation
    def start_stack(
        self, rgb: np.ndarray, entry: dict, record: EditRecord, geometry=None, form=None
    ):
        """Show a new starting image: slice 0 of a fresh ``FreeDrag edits`` stack.

        ``form`` (a :class:`SourceForm`) shows every slice in a source layer's dtype,
        channels and contrast.  An older stack that holds edits is kept under a new name,
        never overwritten.
        """
        scale, translate = geometry or ((1.0, 1.0), (0.0, 0.0))
        old = self.edits
        if old is not None:
            if old.data.shape[0] > 1:
                old.name = _unique_name(self.viewer, f"{EDITS} (earlier)")
            else:
                self.viewer.layers.remove(old)
        record.rgb = np.asarray(rgb)
        image = form.display(rgb) if form is not None else np.asarray(rgb)
        layer = self.viewer.add_image(
            image[None],
            name=EDITS,
            scale=(1.0, *scale),
            translate=(0.0, *translate),
            metadata={"generated": True, "edits": [dict(entry, slice=0, parent=None)]},
            **_look(image, form),
        )
        _RECORDS[layer] = [record]
        _FORMS[layer] = form
        old_working = self.working
        if old_working is not None:
            self.viewer.layers.remove(old_working)
        self.viewer.add_image(
            image,
            name=WORKING,
            scale=scale,
            translate=translate,
            metadata={"generated": True},
            **_look(image, form),
        )
        self._ensure_point_layers(image.shape[:2], scale, translate)
        self.select_slice(0)
        return layer

    def append_edit(self, rgb: np.ndarray, entry: dict, record: EditRecord, parent: int) -> int:
        """Add a finished edit as the last slice of the stack and show it; its index."""
        layer = self.edits
        index = layer.data.shape[0]
        record.rgb = np.asarray(rgb)
        image = self.display(rgb)
        metadata = copy.deepcopy(dict(layer.metadata))
        metadata["edits"].append(dict(entry, slice=index, parent=parent))
        layer.data = np.concatenate([layer.data, image[None]], axis=0)
        layer.metadata = metadata
        _RECORDS[layer].append(record)
        self.working.data = image
        self.select_slice(index)
        return index

    def repair(self) -> None:
        """Re-create owned layers the user deleted or renamed, from the edits stack."""
        edits = self.edits
        if edits is None:
            return
        scale, translate = tuple(edits.scale[-2:]), tuple(edits.translate[-2:])
        if self.working is None:
            image = edits.data[self.selected_slice()]
            look = {"rgb": edits.rgb}
            if not edits.rgb:
                look.update(contrast_limits=edits.contrast_limits, colormap=edits.colormap)
            self.viewer.add_image(
                image, name=WORKING, scale=scale, translate=translate,
                metadata={"generated": True}, **look,
            )  # fmt: skip
        if any(self.get(name) is None for name in (HANDLES, TARGETS, MASK, ARROWS)):
            self._ensure_point_layers(self.working.data.shape[:2], scale, translate)

    def show_frames(self, frames: np.ndarray, entry: dict, edit: int) -> None:
        """Keep a run's previews ``(T, H, W, 3)`` as a movie attached to the edit it made.

        The layer is ``(T, 1, H, W, 3)``, placed at that edit on the edit axis, so its own
        ``frame`` slider plays the run while the edit slider still selects edits.  Only
        the latest run's frames are kept.
        """
        scale, translate = self.geometry()
        old = self.get(FRAMES)
        if old is not None:
            self.viewer.layers.remove(old)
        self.viewer.add_image(
            frames[:, None],
            name=FRAMES,
            rgb=True,
            scale=(1.0, 1.0, *scale),
            translate=(0.0, float(edit), *translate),
            visible=False,
            metadata={"generated": True, "edit": entry},
        )
        labels = list(self.viewer.dims.axis_labels)
        labels[self.viewer.dims.ndim - 4] = "frame"
        self.viewer.dims.axis_labels = labels
        self.select_slice(edit)

    def display(self, rgb: np.ndarray) -> np.ndarray:
        """A model RGB image in the form the current stack shows (the source's, if any)."""
        form = _FORMS.get(self.edits) if self.edits is not None else None
        return form.display(rgb) if form is not None else np.asarray(rgb)

    def _ensure_point_layers(self, shape, scale, translate):
        """Create (or re-fit) handles, targets, mask and arrows for an image of ``shape``."""
        for name, color in ((HANDLES, HANDLE_COLOR), (TARGETS, TARGET_COLOR)):
            layer = self.get(name)
            if layer is None:
                layer = self.viewer.add_points(
                    ndim=2,
                    name=name,
                    face_color=color,
                    border_color="white",
                    size=max(3.0, shape[0] / 40),
                    scale=scale,
                    translate=translate,
                )
                layer.mode = "add"
                layer.events.data.connect(self.sync_arrows)
                layer.events.data.connect(self.alternate)
            else:
                layer.scale, layer.translate = scale, translate
        mask = self.get(MASK)
        if mask is None:
            mask = self.viewer.add_labels(
                np.zeros(shape, np.uint8), name=MASK, scale=scale, translate=translate, opacity=0.4
            )
        elif mask.data.shape != tuple(shape):
            mask.data = np.zeros(shape, np.uint8)
        mask.scale, mask.translate = scale, translate
        if self.get(ARROWS) is None:
            self.viewer.add_vectors(
                np.zeros((0, 2, 2)),
                ndim=2,
                name=ARROWS,
                edge_color=ARROW_COLOR,
                edge_width=max(1.0, shape[0] / 200),
                vector_style="arrow",
            )
        self.sync_arrows()
        # Clicks should go to the handles layer first.
        self.viewer.layers.selection.active = self.get(HANDLES)

    def reconnect(self):
        """Re-attach arrow syncing to existing point layers (a reopened widget)."""
        for name in (HANDLES, TARGETS):
            layer = self.get(name)
            if layer is not None:
                for callback in (self.sync_arrows, self.alternate):
                    layer.events.data.disconnect(callback)
                    layer.events.data.connect(callback)

    def alternate(self, event=None) -> None:
        """After a click adds a handle, the next click adds its target, and back."""
        if event is None or str(getattr(event, "action", "")) != "added":
            return
        handles, targets = self.get(HANDLES), self.get(TARGETS)
        if handles is None or targets is None:
            return
        follow = targets if len(handles.data) > len(targets.data) else handles
        if self.viewer.layers.selection.active is not follow:
            follow.mode = "add"
            self.viewer.layers.selection.active = follow

    # ----------------------------------------------------------------- points
    def points_in_image(self, name: str) -> np.ndarray:
        """The ``(N, 2)`` points of layer ``name`` in working-image pixels ``(row, col)``."""
        layer, image = self.get(name), self.working
        if layer is None or image is None or len(layer.data) == 0:
            return np.zeros((0, 2))
        world = [layer.data_to_world(p) for p in np.asarray(layer.data)]
        return np.array([image.world_to_data(w)[-2:] for w in world], dtype=float)

    def set_points_from_image(self, name: str, points) -> None:
        """Write ``points`` (working-image pixels) into the owned Points layer ``name``."""
        layer, image = self.get(name), self.working
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        world = [image.data_to_world(p) for p in points]
        layer.data = np.array([layer.world_to_data(w)[-2:] for w in world]).reshape(-1, 2)

    def sync_arrows(self, event=None) -> None:
        """One arrow per handle/target pair (matched by order), in world coordinates."""
        arrows = self.get(ARROWS)
        if arrows is None:
            return
        starts, ends = self._world_points(HANDLES), self._world_points(TARGETS)
        n = min(len(starts), len(ends))
        vectors = np.zeros((n, 2, 2))
        vectors[:, 0] = starts[:n]
        vectors[:, 1] = ends[:n] - starts[:n]
        arrows.data = vectors

    def _world_points(self, name: str) -> np.ndarray:
        layer = self.get(name)
        if layer is None or len(layer.data) == 0:
            return np.zeros((0, 2))
        return np.array([layer.data_to_world(p)[-2:] for p in np.asarray(layer.data)])

    def mask_array(self, image_size: tuple[int, int]) -> np.ndarray | None:
        """The painted mask as ``(H, W)`` bool (True = may change), None when nothing painted."""
        layer = self.get(MASK)
        if layer is None:
            return None
        return check_mask(np.asarray(layer.data), image_size)

    # ----------------------------------------------------------------- slices
    def _stack_axis(self) -> int:
        """The world axis along which the edits stack is sliced."""
        return self.viewer.dims.ndim - self.edits.ndim

    def selected_slice(self) -> int:
        """The edits slice the viewer shows (the one Run continues from)."""
        layer = self.edits
        if layer is None:
            return -1
        index = int(np.round(layer.world_to_data(self.viewer.dims.point)[0]))
        return int(np.clip(index, 0, layer.data.shape[0] - 1))

    def select_slice(self, index: int) -> None:
        axis = self._stack_axis()
        labels = list(self.viewer.dims.axis_labels)
        if labels[axis].lstrip("-").isdigit():  # napari's default name: say what it is
            labels[axis] = "edit"
            self.viewer.dims.axis_labels = labels
        self.viewer.dims.set_point(axis, float(index))

    def show_image(self, rgb: np.ndarray) -> None:
        """Show a model RGB image (a live preview) in the working layer."""
        self.working.data = self.display(rgb)


def _look(image: np.ndarray, form: SourceForm | None) -> dict[str, Any]:
    """Image-layer keywords: RGB for model images, the source's contrast and colormap else."""
    if form is None or (image.ndim == 3 and image.shape[-1] in (3, 4)):
        return {"rgb": True}
    return {"rgb": False, "contrast_limits": form.contrast_limits, "colormap": form.colormap}


def check_mask(mask: np.ndarray | None, image_size: tuple[int, int]) -> np.ndarray | None:
    """Validate a user mask; None when empty (an empty mask must not freeze the image)."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(image_size):
        raise InputError(
            f"the mask is {_shape(mask.shape)} but the image is {_shape(image_size)}: "
            "paint the mask on the 'mask' layer of this image (or pass a mask of the image's size)"
        )
    mask = mask != 0
    return mask if mask.any() else None


def _shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _unique_name(viewer, base: str) -> str:
    name, k = base, 2
    while name in viewer.layers:
        name, k = f"{base} {k}", k + 1
    return name
