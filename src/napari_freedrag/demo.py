"""The main job's viewer, and its headless demo (``napari-freedrag demo --out DIR``).

The demo opens the same napari window a user gets (FreeDrag widget docked, bundled model),
places one handle and one target, runs a real FreeDrag edit through
:func:`napari_freedrag.napari.api.napari_drag` and saves window screenshots before and
after, plus the edit's JSON report. Under Xvfb this proves the whole stack works on a
machine without a display.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from napari_freedrag.errors import InputError

#: How far the demo drags, as a fraction of the image width.
DEMO_DRAG_FRACTION = 0.2
DEMO_MAX_STEPS = 100  # keep in step with the CLI default
WINDOW_SIZE = (1400, 900)


def require_display(what: str) -> None:
    """Qt aborts the process without a display; say what to do instead, in one line."""
    headless = not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and headless and "QT_QPA_PLATFORM" not in os.environ:
        hint = "'napari-freedrag demo --out DIR' (screenshots) or " if what != "demo" else ""
        raise InputError(
            f"no display to open napari on ({what}): run it under 'xvfb-run -a', or use "
            f"{hint}'napari-freedrag edit' (files only)"
        )


def open_viewer(model: str = "cells", *, show: bool = True, seed: int = 0, new_image=True):
    """A napari viewer with the FreeDrag widget docked on ``model``: ``(viewer, widget)``.

    With ``new_image`` the widget loads ``model`` and shows the ``seed`` image in the
    background (the window stays responsive; errors become notifications).
    """
    import napari

    viewer = napari.Viewer(title="napari-freedrag", show=show)
    viewer.window.resize(*WINDOW_SIZE)
    # The same route as Plugins > FreeDrag, so the main job proves the npe2 contribution.
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-freedrag", "FreeDrag")
    widget.set_model(model)
    widget.seed.value = seed
    if new_image:
        widget.new_image()
    return viewer, widget


def wait_until_idle(widget, timeout_s: float = 600.0) -> None:
    """Run the Qt event loop, as napari's own does, until the widget's worker has finished."""
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # work the last action queued may start now
    controller = widget.controller
    if controller.running:
        loop = QEventLoop()

        def idle(busy: bool) -> None:
            if not busy:
                loop.quit()

        controller.busy.connect(idle)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
        controller.busy.disconnect(idle)
        if controller.running:
            raise TimeoutError("the FreeDrag worker did not finish in time")
    QApplication.processEvents()


def pick_sample_plane(viewer, widget, plane: int):
    """Open the uint16 µm z-stack sample as a user does (File > Open Sample), wait for the
    new image the widget makes from a FreeDrag sample, move the view to ``plane`` and pick
    that plane as the widget's source image; the stack layer."""
    viewer.open_sample("napari-freedrag", "cells_stack")
    wait_until_idle(widget)
    (stack,) = [layer for layer in viewer.layers if "z-stack" in layer.name]
    viewer.dims.set_current_step(0, plane)
    widget.reset_choices()
    widget.source.value = stack
    return stack


def run_demo(
    out: str | Path, model: str = "cells", seed: int = 0, max_steps: int = DEMO_MAX_STEPS
) -> dict[str, Any]:
    """Run one real drag in a visible viewer; write before/after screenshots and a report."""
    import numpy as np

    from napari_freedrag import io
    from napari_freedrag.napari.api import napari_drag
    from napari_freedrag.napari.runner import controller_for

    require_display("demo")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"demo output folder {out}: {exc.strerror or exc}") from None
    backend = _demo_backend(model)
    viewer, widget = open_viewer(model, show=True, seed=seed, new_image=False)
    try:
        controller = controller_for(viewer)
        controller.new_image(backend, seed, wait=True)
        handle, target = pick_drag(controller.layers.working.data)
        controller.layers.set_points_from_image("handles", [handle])
        controller.layers.set_points_from_image("targets", [target])
        provenance = {
            "model": backend.name,
            "seed": seed,
            "instruction": _instruction(handle, target),
        }
        before = io.write_image(out / "before.png", _screenshot(viewer), provenance)

        result = napari_drag(viewer, model=backend, seed=seed, max_steps=max_steps)
        after = io.write_image(
            out / "after.png", _screenshot(viewer), io.provenance_from_report(result.report)
        )
        report = {
            **result.report,
            "demo": {"before": before.name, "after": after.name, "widget": type(widget).__name__},
        }
        io.write_report(out / "report.json", report)
    finally:
        viewer.close()
    points = ", ".join(f"({r:.1f}, {c:.1f})" for r, c in np.asarray(result.points))
    print(
        f"demo: {backend.name} seed {seed}: dragged {_instruction(handle, target)} in "
        f"{result.steps} steps ({'converged' if result.converged else 'not converged'}), "
        f"points now {points}; wrote {before}, {after}, {out / 'report.json'}",
        file=sys.stderr,
    )
    return report


def _demo_backend(model: str):
    """The backend to drag with; a random-weight StyleGAN2 when the bundled weights are absent.

    A source checkout may lack the trained ``cells`` weights (they are produced by
    ``napari-freedrag train-cells``); the demo then still runs a real drag, on a
    64 px generator with random weights, and its name says so.
    """
    from napari_freedrag.models.cells import bundled_weights_path
    from napari_freedrag.models.registry import load_generator

    if model != "cells" or bundled_weights_path().is_file():
        return load_generator(model)
    from napari_freedrag.testing import generator_config, random_backend

    config = generator_config(
        64, z_dim=64, w_dim=64, mapping_layers=2, channel_base=1024, channel_max=64
    )
    print("demo: bundled cells weights not found; using a random-weight StyleGAN2", file=sys.stderr)
    return random_backend(config, "random-weight StyleGAN2 64px (cells weights missing)")


def pick_drag(image) -> tuple[tuple[float, float], tuple[float, float]]:
    """A handle on the brightest blob (a cell, for the bundled model) and a target beside it.

    The target lies ``DEMO_DRAG_FRACTION`` of the width towards the image centre.
    """
    import numpy as np
    from skimage.filters import gaussian

    height, width = image.shape[:2]
    gray = np.asarray(image, dtype=float).reshape(height, width, -1).mean(axis=-1)
    smooth = gaussian(gray, sigma=max(height, width) / 32)
    margin_r, margin_c = int(0.15 * height), int(0.15 * width)
    inner = smooth[margin_r : height - margin_r, margin_c : width - margin_c]
    row, col = np.unravel_index(int(np.argmax(inner)), inner.shape)
    row, col = row + margin_r, col + margin_c
    shift = DEMO_DRAG_FRACTION * width * (1 if col < width / 2 else -1)
    return (float(row), float(col)), (float(row), float(round(col + shift, 1)))


def _instruction(handle, target) -> str:
    return f"drag ({handle[0]:g}, {handle[1]:g}) -> ({target[0]:g}, {target[1]:g})"


def _screenshot(viewer):
    """The whole window (widget included) once Qt has drawn everything pending."""
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # let the canvas take its final size before fitting the view
    viewer.reset_view()
    QApplication.processEvents()
    return viewer.screenshot(canvas_only=False, flash=False)
