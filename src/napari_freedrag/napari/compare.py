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
#: Its role in the layer metadata: generated, so never offered as a source image.
COMPARISON_ROLE = "comparison"
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
    comparison = Comparison(parent=controller.history.current_index)
    handles = controller.layers.points_in_image(L.HANDLES)
    targets = controller.layers.points_in_image(L.TARGETS)

    def start(index: int) -> None:
        method = METHODS[index]
        controller.select_edit(comparison.parent)
        before = len(controller.history)
        worker = controller.run(
            method=method, handles=handles, targets=targets, **settings, **params[method]
        )

        def finished():
            if len(controller.history) > before:
                comparison.slices[method] = len(controller.history) - 1
            if method not in comparison.slices or index + 1 == len(METHODS):
                _show(controller, comparison)
                return
            try:
                start(index + 1)
            except Exception as exc:  # noqa: BLE001 - any refusal of the 2nd run: say so, keep the 1st
                notify_error(exc)
                _show(controller, comparison)

        worker.finished.connect(finished)

    start(0)
    return comparison


def _show(controller, comparison: Comparison) -> None:
    """The two results side by side, right of the working image; a status naming both."""
    comparison.finished = True
    viewer = controller.viewer
    if len(comparison.slices) < len(METHODS):
        controller.status.emit("compare: stopped before both methods ran; kept what finished")
        return
    edits = [controller.history[comparison.slices[m]] for m in METHODS]
    panels = [edit.display() for edit in edits]
    width = panels[0].shape[1]
    gap = np.zeros((panels[0].shape[0], max(1, round(GAP * width)), *panels[0].shape[2:]))
    image = np.concatenate([panels[0], gap.astype(panels[0].dtype), panels[1]], axis=1)
    form = edits[0].form
    where = form.placement.layer_kwargs()
    where["translate"] = np.array(where["translate"], dtype=float)
    where["translate"][-1] += (width + gap.shape[1]) * form.placement.scale[-1]
    old = next((x for x in viewer.layers if L.role_of(x) == COMPARISON_ROLE), None)
    if old is not None:
        viewer.layers.remove(old)
    look = {"rgb": True} if form.rgb else {"rgb": False, "colormap": form.colormap}
    if not form.rgb and form.contrast_limits is not None:
        look["contrast_limits"] = form.contrast_limits
    viewer.add_image(
        form.placement.lead(image),
        name=COMPARISON,
        metadata={L.MARKER: COMPARISON_ROLE, "generated": True, "edits": dict(comparison.slices)},
        **look,
        **where,
    )
    viewer.layers.move(len(viewer.layers) - 1, 0)  # below everything: clicks go to the points
    controller.select_edit(comparison.slices[METHODS[-1]])
    viewer.reset_view()
    shown = ", ".join(f"{TITLES[m]} = edit {comparison.slices[m]}" for m in METHODS)
    controller.status.emit(f"compared from edit {comparison.parent}: {shown} (right: side by side)")
