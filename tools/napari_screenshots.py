"""Before/after screenshots of the FreeDrag widget for docs/napari-guide.md.

Drives the viewer the way a user does: the window ``napari-freedrag`` opens (widget docked,
bundled model), a handle and a target placed in the points layers, the Run button
clicked, the threaded run awaited with the Qt event loop turning.  Run under Xvfb:

    OMP_NUM_THREADS=1 xvfb-run -a .venv/bin/python tools/napari_screenshots.py [--model cells]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def wait_idle(widget, app, timeout_s: float = 600.0) -> None:
    """Turn the event loop until the widget's controller has finished its worker."""
    deadline = time.monotonic() + timeout_s
    while widget.controller.running:
        if time.monotonic() > deadline:
            raise TimeoutError("the FreeDrag worker did not finish in time")
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cells")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)

    from qtpy.QtWidgets import QApplication

    from napari_freedrag import io
    from napari_freedrag.demo import open_viewer, pick_drag
    from napari_freedrag.napari import layers as L

    args.out.mkdir(parents=True, exist_ok=True)
    viewer, widget = open_viewer(args.model, show=True, seed=args.seed)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 900)
    wait_idle(widget, app)
    # The demo's instruction: a handle on the largest cell, dragged towards the centre.
    handle, target = pick_drag(viewer.layers[L.WORKING].data)
    viewer.layers[L.HANDLES].add([handle])
    viewer.layers[L.TARGETS].add([target])
    widget.max_steps.value = args.max_steps
    provenance = {"model": args.model, "seed": args.seed}

    def shot(name: str) -> Path:
        app.processEvents()
        image = viewer.screenshot(canvas_only=False, flash=False)
        return io.write_image(args.out / name, np.asarray(image)[..., :3], provenance)

    shot("napari-before.png")
    started = time.perf_counter()
    widget.run_button.clicked.emit()
    wait_idle(widget, app)
    seconds = time.perf_counter() - started
    shot("napari-after.png")
    edits = viewer.layers[L.EDITS]
    entry = edits.metadata["edits"][-1]
    if entry["instruction"] is None:
        raise SystemExit(f"Run made no edit: {widget.status.value}")
    final = np.round(entry["instruction"]["final_points"], 1).tolist()
    print(
        f"{args.model} seed {args.seed}: drag {handle} -> {target}: {entry['steps']} steps "
        f"in {seconds:.1f} s (converged: {entry['converged']}), handle now at {final}; "
        f"edits stack {edits.data.shape}; status: {widget.status.value!r}"
    )
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
