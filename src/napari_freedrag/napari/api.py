"""``napari_drag``: the widget's Run, from the napari console or a script."""

from __future__ import annotations

from typing import Any

from napari_freedrag.napari.runner import controller_for


def napari_drag(
    viewer,
    model: str | Any = "cells",
    seed: int = 0,
    handles=None,
    targets=None,
    mask=None,
    method: str = "freedrag",
    wait: bool = True,
    *,
    truncation: float = 0.7,
    device: str = "auto",
    new_image: bool | None = None,
    max_steps: int | None = None,
    preview_every: int | None = None,
    keep_frames: bool = False,
    **params,
):
    """Drag ``handles`` to ``targets`` in ``viewer``, through the same layers as the widget.

    ``handles`` / ``targets``: ``[[row, col], ...]`` in image pixels (None = use the points
    already in the ``handles`` / ``targets`` layers).  ``mask``: ``(H, W)`` array, nonzero =
    may change (None = no mask).  ``model`` is a MODEL string as for the CLI, or a backend
    object.  A new image is made from ``seed`` when the viewer has none yet (or when
    ``new_image=True``); otherwise the edit continues from the selected ``FreeDrag edits``
    slice.  ``params`` override the preset (``l``, ``d``, ``lr``, ...).

    Returns the ``DragResult`` (``wait=True``, in the calling thread, which must be the
    main thread) or the running napari worker (``wait=False``; connect to ``returned``).
    Raises :class:`~napari_freedrag.errors.FreeDragError` for bad input, changing nothing.
    """
    controller = controller_for(viewer)
    if new_image or (new_image is None and not controller.layers.records()):
        controller.new_image(model, seed, truncation, device=device, wait=True)
    return controller.run(
        method=method,
        handles=handles,
        targets=targets,
        mask=mask,
        max_steps=max_steps,
        preview_every=preview_every,
        keep_frames=keep_frames,
        wait=wait,
        **params,
    )
