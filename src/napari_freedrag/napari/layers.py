"""The layers FreeDrag owns in a viewer, held by identity and never looked up by name.

A user's layer called ``mask`` or ``handles`` is the user's: the plugin keeps references
to the layers it created (and marks them with ``metadata["napari-freedrag"]``), names
them "FreeDrag …" and only ever reads anything else.  Owned layers share the working
image's :class:`~napari_freedrag.napari.placement.Placement` (the source plane's
transform), so a click lands on the same pixel in every one of them; points are still
converted through world coordinates, so a user who re-scales an owned layer is read right.
"""

from __future__ import annotations

import weakref
from contextlib import ExitStack
from typing import Any

import numpy as np

from napari_freedrag.napari.placement import Placement

#: Roles of the owned layers (keys of :meth:`OwnedLayers.get`).
HANDLES, TARGETS, MASK, ARROWS, WORKING = "handles", "targets", "mask", "arrows", "image"
#: The overlays, bottom to top: they stay above every image the plugin adds.
OVERLAYS = (MASK, ARROWS, HANDLES, TARGETS)
NAMES = {
    HANDLES: "FreeDrag handles",
    TARGETS: "FreeDrag targets",
    MASK: "FreeDrag mask",
    ARROWS: "FreeDrag arrows",
    WORKING: "FreeDrag result (generated)",
}
MARKER = "napari-freedrag"
#: Points data events sent before a change (napari sends one before and one after).
_BEFORE_CHANGE = ("adding", "changing", "removing")

HANDLE_COLOR = "#ff4040"
TARGET_COLOR = "#40a0ff"
ARROW_COLOR = "#ffd000"


def role_of(layer) -> str | None:
    """The owned role a layer was created for (None for a user's layer)."""
    metadata = getattr(layer, "metadata", None) or {}
    role = metadata.get(MARKER)
    return role if isinstance(role, str) else None


class OwnedLayers:
    """Create, find (by reference), read and write the plugin's layers in one viewer."""

    def __init__(self, viewer):
        self._viewer = weakref.ref(viewer)
        self._layers: dict[str, Any] = {}
        self._placement: Placement | None = None
        self._pairing = False
        viewer.layers.events.inserted.connect(self._on_inserted)

    @property
    def viewer(self):
        return self._viewer()

    @property
    def placement(self) -> Placement | None:
        return self._placement

    # ---------------------------------------------------------------- lookup
    def get(self, role: str):
        """The owned layer for ``role`` while it is in the viewer, else None."""
        layer = self._layers.get(role)
        viewer = self.viewer
        if layer is None or viewer is None or not any(x is layer for x in viewer.layers):
            return None
        return layer

    @property
    def working(self):
        return self.get(WORKING)

    def owns(self, layer) -> bool:
        return any(layer is mine for mine in self._layers.values())

    # ------------------------------------------------------------------ show
    def show(self, image: np.ndarray, form, metadata: dict[str, Any]) -> None:
        """Show ``image`` (source form, one plane) in the working layer, creating what is missing.

        A new placement (another source or plane) replaces the owned layers: points and
        mask belong to the image they were drawn on.
        """
        viewer = self.viewer
        if form.placement != self._placement:
            for role in (WORKING, *OVERLAYS):
                layer = self.get(role)
                if layer is not None:
                    viewer.layers.remove(layer)
            self._layers.clear()
            self._placement = form.placement
        data = form.placement.lead(image)
        layer = self.working
        if layer is None:
            look = {"rgb": True} if form.rgb else {"rgb": False, "colormap": form.colormap}
            if not form.rgb and form.contrast_limits is not None:
                look["contrast_limits"] = form.contrast_limits
            layer = viewer.add_image(
                data,
                name=NAMES[WORKING],
                metadata={MARKER: WORKING, "generated": True, **metadata},
                **look,
                **form.placement.layer_kwargs(),
            )
            self._layers[WORKING] = layer
        else:
            layer.data = data
            layer.metadata = {MARKER: WORKING, "generated": True, **metadata}
        self.ensure_overlays()

    def update_image(self, image: np.ndarray) -> None:
        """Replace the working image's pixels (a live preview); nothing if it was deleted."""
        layer, placement = self.working, self._placement
        if layer is not None and placement is not None:
            layer.data = placement.lead(image)

    def ensure_overlays(self) -> None:
        """Create the missing points, mask and arrows layers and keep them on top."""
        placement, viewer = self._placement, self.viewer
        if placement is None:
            return
        size = placement.size
        kwargs = placement.layer_kwargs()
        for role, color in ((HANDLES, HANDLE_COLOR), (TARGETS, TARGET_COLOR)):
            if self.get(role) is None:
                layer = viewer.add_points(
                    ndim=placement.ndim,
                    name=NAMES[role],
                    face_color=color,
                    border_color="white",
                    size=max(2.0, size[0] / 25),
                    metadata={MARKER: role},
                    **kwargs,
                )
                layer.mode = "add"
                layer.events.data.connect(self.sync_arrows)
                layer.events.data.connect(self._alternate)
                layer.events.data.connect(self._pair_removal)
                self._layers[role] = layer
        if self.get(MASK) is None:
            self._layers[MASK] = viewer.add_labels(
                placement.lead(np.zeros(size, np.uint8)),
                name=NAMES[MASK],
                opacity=0.4,
                metadata={MARKER: MASK},
                **kwargs,
            )
        if self.get(ARROWS) is None:
            self._layers[ARROWS] = viewer.add_vectors(
                np.zeros((0, 2, placement.ndim)),
                ndim=placement.ndim,
                name=NAMES[ARROWS],
                edge_color=ARROW_COLOR,
                edge_width=max(1.0, size[0] / 200) * float(placement.scale[-1]),
                vector_style="arrow",
                metadata={MARKER: ARROWS},
                **kwargs,
            )
        self.sync_arrows()
        self.raise_overlays()
        viewer.layers.selection.active = self.get(HANDLES)  # clicks go to handles first

    def raise_overlays(self) -> None:
        """Move the owned overlays to the top (in OVERLAYS order); other layers keep theirs."""
        layers = self.viewer.layers
        overlays = [layer for layer in (self.get(role) for role in OVERLAYS) if layer is not None]
        if list(layers)[-len(overlays) :] == overlays:
            return
        for layer in overlays:
            layers.move(layers.index(layer), len(layers))

    def _on_inserted(self, event=None) -> None:
        """A layer added above the overlays (a user's image, a sample) goes below them."""
        layer = getattr(event, "value", None)
        if layer is not None and role_of(layer) not in OVERLAYS and self._layers:
            self.raise_overlays()

    # ----------------------------------------------------------------- points
    def points_in_image(self, role: str) -> np.ndarray:
        """The ``(N, 2)`` points of ``role`` in working-image pixels ``(row, col)``."""
        layer, image = self.get(role), self.working
        if layer is None or image is None or len(layer.data) == 0:
            return np.zeros((0, 2))
        world = [layer.data_to_world(p) for p in np.asarray(layer.data)]
        return np.array([image.world_to_data(w)[-2:] for w in world], dtype=float)

    def set_points_from_image(self, role: str, points) -> None:
        """Write ``points`` (working-image pixels) into the owned points layer ``role``."""
        layer, image = self.get(role), self.working
        if layer is None or image is None:
            return
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        lead = [0.0] * (image.ndim - 2)
        world = [image.data_to_world([*lead, *p]) for p in points]
        data = [layer.world_to_data(w) for w in world]
        layer.data = np.array(data, dtype=float).reshape(-1, layer.ndim)

    def show_live(self, image: np.ndarray | None, handles) -> None:
        """A running drag's newest step: its preview (source form) and handle positions.

        A live step changes no layer's shape, size or extent, so the data events that make
        napari recompute its dims, pair the user's clicks and redraw the arrows are held
        back, as are the layer list's thumbnail repaints (together most of a step's display
        time): the handles travel along the arrows the user drew (a moved target still
        redraws them), and the finished edit is shown through the usual, evented path.
        """
        with ExitStack() as held:
            for role in (WORKING, HANDLES, ARROWS):
                layer = self.get(role)
                if layer is not None:
                    held.enter_context(layer.events.data.blocker())
                    held.enter_context(layer.events.thumbnail.blocker())
                    held.enter_context(layer.events.blocker())  # re-emission to the layer list
            if image is not None:
                self.update_image(image)
            self.set_points_from_image(HANDLES, handles)

    def clear_points(self) -> None:
        for role in (HANDLES, TARGETS):
            layer = self.get(role)
            if layer is not None and len(layer.data):
                layer.data = layer.data[:0]

    def sync_arrows(self, event=None) -> None:
        """One arrow per handle/target pair (matched by order), once per finished change."""
        arrows = self.get(ARROWS)
        if arrows is None or str(getattr(event, "action", "")) in _BEFORE_CHANGE:
            return
        starts, ends = self._arrow_points(HANDLES, arrows), self._arrow_points(TARGETS, arrows)
        n = min(len(starts), len(ends))
        vectors = np.zeros((n, 2, arrows.ndim))
        vectors[:, 0] = starts[:n]
        vectors[:, 1] = ends[:n] - starts[:n]
        if not np.array_equal(np.asarray(arrows.data), vectors):  # a repaint only if needed
            arrows.data = vectors

    def _arrow_points(self, role: str, arrows) -> np.ndarray:
        layer = self.get(role)
        if layer is None or len(layer.data) == 0:
            return np.zeros((0, arrows.ndim))
        return np.array([arrows.world_to_data(layer.data_to_world(p)) for p in layer.data])

    def _alternate(self, event=None) -> None:
        """After a click adds a handle, the next click adds its target, and back."""
        if str(getattr(event, "action", "")) != "added":
            return
        handles, targets = self.get(HANDLES), self.get(TARGETS)
        if handles is None or targets is None:
            return
        follow = targets if len(handles.data) > len(targets.data) else handles
        if self.viewer.layers.selection.active is not follow:
            follow.mode = "add"
            self.viewer.layers.selection.active = follow

    def _pair_removal(self, event=None) -> None:
        """Deleting a handle deletes its target (and back): pairs never re-match."""
        if self._pairing or str(getattr(event, "action", "")) != "removed":
            return
        handles, targets = self.get(HANDLES), self.get(TARGETS)
        partner = targets if getattr(event, "source", None) is handles else handles
        if partner is None:
            return
        indices = [i for i in getattr(event, "data_indices", ()) if i < len(partner.data)]
        if not indices:
            return
        self._pairing = True
        try:
            partner.remove(indices)
        finally:
            self._pairing = False

    def mask_array(self) -> np.ndarray | None:
        """The painted mask as one ``(H, W)`` plane, None when the mask layer is gone."""
        layer = self.get(MASK)
        if layer is None:
            return None
        data = np.asarray(layer.data)
        return data.reshape(data.shape[-2:]) if data.size == np.prod(data.shape[-2:]) else data
