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
    source=None,
    truncation: float = 0.7,
    device: str = "auto",
    new_image: bool | None = None,
    max_steps: int | None = None,
    preview_every: int | None = None,
    keep_frames: bool = False,
    prompt: str = "",
    lora_steps: int = 0,
    projection: dict[str, Any] | None = None,
    **params,
):
    """Drag ``handles`` to ``targets`` in ``viewer``, through the same controller as the widget.

    ``source``: a user's Image layer to edit (its plane on screen; the layer is only read;
    a StyleGAN2 model projects it first, ``projection`` giving ``invert_steps`` options
    such as ``{"mode": "pti", "steps": 200}``; an ``ldm:PATH`` model inverts it).
    ``source=None`` samples from ``seed`` (StyleGAN2 models) when the viewer has no
    working image yet or when ``new_image=True``; otherwise the edit continues from the
    current edit.
    ``handles`` / ``targets``: ``[[row, col], ...]`` in image pixels (None = use the points
    in the "FreeDrag handles" / "FreeDrag targets" layers).  ``mask``: ``(H, W)`` array,
    nonzero = may change (None = no mask).  ``params`` override the preset (``l``, ``lr``…).

    Returns the ``DragResult`` (``wait=True``, in the main thread) or the running napari
    worker (``wait=False``; connect to ``returned``).  Bad input raises
    :class:`~napari_freedrag.errors.FreeDragError`, changing nothing.
    """
    controller = controller_for(viewer)
    if source is not None or new_image or (new_image is None and not len(controller.history)):
        controller.new_image(
            model, seed, truncation, device=device, source=source, prompt=prompt,
            lora_steps=lora_steps, projection=projection, wait=True,
        )  # fmt: skip
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
