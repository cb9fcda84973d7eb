"""The edit history of one viewer: every start image and every edit, never deleted.

Browsing (``select``, ``undo``, ``redo``) only moves the *current* edit, the one shown
and the one the next Run continues from; an edit made from an earlier one is appended
with that parent, so no edit is ever lost.  The history is plain Python: no napari axis,
so scrubbing it can never scrub a user's z or t.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psygnal import Signal

from napari_freedrag.napari.placement import Placement


@dataclass
class ImageForm:
    """How results of one working image are shown and saved: the source's form, or RGB.

    ``info`` (an :class:`~napari_freedrag.imaging.SourceInfo`) maps a model image back to
    the source's shape, channels, dtype and full value range; None for sampled images.
    """

    placement: Placement
    info: Any = None
    contrast_limits: tuple[float, float] | None = None
    colormap: str = "gray"
    source: dict[str, Any] | None = None  # the source layer's name, dtype, limits, scale

    def display(self, rgb: np.ndarray) -> np.ndarray:
        """A model ``(H, W, 3)`` uint8 image in the source's form (or as it is)."""
        if self.info is None:
            return np.asarray(rgb)
        from napari_freedrag.imaging import from_model_rgb

        return from_model_rgb(rgb, self.info)

    @property
    def rgb(self) -> bool:
        return self.info is None or self.info.channels in ("rgb", "rgba")


@dataclass
class Edit:
    """One entry: the state Run continues from, how to show it, and its provenance."""

    state: Any  # engine.protocol.StartState; state.image is the model's uint8 RGB
    backend: Any
    form: ImageForm
    entry: dict[str, Any]
    parent: int | None = None
    label: str = ""
    frames: list[np.ndarray] = field(default_factory=list)

    @property
    def model_rgb(self) -> np.ndarray:
        return np.asarray(self.state.image)

    def display(self) -> np.ndarray:
        """This edit in the source's form (computed on demand: the image is held once)."""
        return self.form.display(self.model_rgb)


class EditHistory:
    """An append-only list of edits with a current position."""

    #: The current edit changed (its index); the widget's history control listens.
    current_changed = Signal(int)
    #: An edit was appended (its index).
    appended = Signal(int)

    def __init__(self):
        self._edits: list[Edit] = []
        self._current = -1
        self._redo: dict[int, int] = {}  # parent -> the child that undo came from

    def __len__(self) -> int:
        return len(self._edits)

    def __getitem__(self, index: int) -> Edit:
        return self._edits[index]

    def __iter__(self):
        return iter(self._edits)

    @property
    def current_index(self) -> int:
        return self._current

    @property
    def current(self) -> Edit | None:
        return self._edits[self._current] if self._edits else None

    def append(self, edit: Edit) -> int:
        """Add ``edit`` and make it current; its index."""
        self._edits.append(edit)
        index = len(self._edits) - 1
        self.appended.emit(index)
        self.select(index)
        return index

    def select(self, index: int) -> Edit:
        """Make edit ``index`` current (negative counts from the end)."""
        if not self._edits:
            raise IndexError("the history is empty")
        index = range(len(self._edits))[index]
        changed = index != self._current
        self._current = index
        if changed:
            self.current_changed.emit(index)
        return self._edits[index]

    def undo(self) -> Edit | None:
        """Step back to the current edit's parent (None at a start image)."""
        edit = self.current
        if edit is None or edit.parent is None:
            return None
        self._redo[edit.parent] = self._current
        return self.select(edit.parent)

    def redo(self) -> Edit | None:
        """Step forward to the child undo came from, else the newest child (None if none)."""
        if self.current is None:
            return None
        child = self._redo.get(self._current)
        if child is None:
            children = [i for i, e in enumerate(self._edits) if e.parent == self._current]
            child = children[-1] if children else None
        return None if child is None else self.select(child)


# --- working-image pixels <-> model pixels ----------------------------------------------


def zoom_of(edit: Edit) -> np.ndarray:
    """Model pixels per working-image pixel, per axis (1 when the model keeps the size)."""
    model = np.asarray(edit.state.image_size, float)
    return model / np.asarray(edit.form.placement.size, float)


def to_model(points, zoom):
    """Working-image pixels to model pixels (pixel centres map to pixel centres)."""
    if np.all(zoom == 1.0):
        return points
    array = np.asarray(points, dtype=float)
    return (array + 0.5) * zoom - 0.5


def from_model(points, zoom) -> np.ndarray:
    return (np.asarray(points, dtype=float) + 0.5) / zoom - 0.5


def resize_mask(mask, edit: Edit):
    """The painted mask at the model's size (nearest neighbour: labels stay labels)."""
    if mask is None:
        return None
    size = tuple(int(s) for s in edit.state.image_size)
    if mask.shape == size or mask.shape != tuple(edit.form.placement.size):
        return mask
    rows = np.minimum((np.arange(size[0]) + 0.5) * mask.shape[0] // size[0], mask.shape[0] - 1)
    cols = np.minimum((np.arange(size[1]) + 0.5) * mask.shape[1] // size[1], mask.shape[1] - 1)
    return mask[rows.astype(int)[:, None], cols.astype(int)[None, :]]
