""" "Compare methods": FreeDrag and DragGAN on one instruction, shown side by side.

Both runs start from the same edit with the same handles, targets and mask, one after the
other (one model, one worker at a time).  Each result is an ordinary edit in the history
(its provenance names the method); a two-panel image beside the working image shows them
next to each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_freedrag.napari import layers as L
from napari_freedrag.napari.runner import notify_error

METHODS = ("freedrag", "draggan")
TITLES = {"freedrag": "FreeDrag", "draggan": "DragGAN"}
COMPARISON = "FreeDrag | DragGAN (generated)"
#: Empty columns between the two panels, as a fraction of the image width.
GAP = 0.05


@dataclass
class Comparison:
    """A comparison in progress: which edit each method made, and whether both ran."""

    parent: int
    slices: dict[str, int] = field(default_factory=dict)
    finished: bool = False


def compare_methods(controller, settings: dict, params: dict[str, dict]) -> Comparison:
    """Run each method of :data:`METHODS` from the selected edit; show both when done.

    ``settings`` (max_steps, preview_every) apply to both runs; ``params[method]`` are
    that method's own knobs.  Bad points raise :class:`~napari_freedrag.errors.InputError`
    before anything runs, as a plain Run does.
    """
    comparison = Comparison(parent=controller.layers.selected_slice())
    handles = controller.layers.points_in_image(L.HANDLES)
    targets = controller.layers.points_in_image(L.TARGETS)

    def start(index: int) -> None:
        method = METHODS[index]
        controller.layers.select_slice(comparison.parent)
        before = len(controller.layers.records())
        worker = controller.run(
            method=method, handles=handles, targets=targets, **settings, **params[method]
        )

        def finished():
            if len(controller.layers.records()) > before:
                comparison.slices[method] = len(controller.layers.records()) - 1
            if method not in comparison.slices or index + 1 == len(METHODS):
                _show(controller, comparison)
                return
            try:
                start(index + 1)
            except Exception as exc:  # the next run is refused: say so, keep the first
                notify_error(exc)
                _show(controller, comparison)

        worker.finished.connect(finished)

    start(0)
    return comparison


def _show(controller, comparison: Comparison) -> None:
    """The two results side by side, right of the working image; a status naming both."""
    comparison.finished = True
    layers, viewer = controller.layers, controller.viewer
    if len(comparison.slices) < len(METHODS):
        controller.status.emit("compare: stopped before both methods ran; kept what finished")
        return
    panels = [np.asarray(layers.edits.data[comparison.slices[m]]) for m in METHODS]
    width = panels[0].shape[1]
    gap = np.zeros((panels[0].shape[0], max(1, round(GAP * width)), *panels[0].shape[2:]))
    image = np.concatenate([panels[0], gap.astype(panels[0].dtype), panels[1]], axis=1)
    (scale, translate), edits = layers.geometry(), layers.edits
    offset = (0.0, (width + gap.shape[1]) * scale[1])
    old = layers.get(COMPARISON)
    if old is not None:
        viewer.layers.remove(old)
    look = {"rgb": edits.rgb}
    if not edits.rgb:
        look.update(contrast_limits=edits.contrast_limits, colormap=edits.colormap)
    viewer.add_image(
        image,
        name=COMPARISON,
        scale=scale,
        translate=tuple(np.add(translate, offset)),
        metadata={"generated": True, "edits": dict(comparison.slices)},
        **look,
    )
    viewer.layers.move(len(viewer.layers) - 1, 0)  # below everything: clicks go to the points
    layers.select_slice(comparison.slices[METHODS[-1]])
    viewer.reset_view()
    shown = ", ".join(f"{TITLES[m]} = edit {comparison.slices[m]}" for m in METHODS)
    controller.status.emit(f"compared from edit {comparison.parent}: {shown} (right: side by side)")
