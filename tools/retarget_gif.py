"""A GIF of live re-targeting for the docs: a target moved while the drag is running.

Drives the dock widget as a user does: a handle on a blob of the analytic model, its target
to the right, Run; after a few steps the target point is moved (the targets layer's data
changes exactly as when the user drags the point) and the run follows it to the new place.
Every shown step of the canvas becomes one frame. Run under Xvfb:

    OMP_NUM_THREADS=1 xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python tools/retarget_gif.py
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Seconds per feature computation: the analytic model paced like a real model on a CPU,
#: so that the screen (one screenshot a step) keeps up with the run.
PACE_S = 0.15
#: Where the blobs start (image pixels): one to drag, one that should stay.
LAYOUT = ((40.0, 30.0), (70.0, 72.0))


def paced_backend():
    """The analytic model with a clean start layout and a real model's pace."""
    from napari_freedrag.models.analytic import AnalyticBackend

    class Paced(AnalyticBackend):
        def sample(self, seed, truncation=0.7):
            return self.from_centres(LAYOUT)

        def session(self, start, mask, method):
            session = super().session(start, mask, method)
            features = session.features

            def paced(latent, boxes=None):
                time.sleep(PACE_S)
                return features(latent, boxes)

            session.features = paced
            return session

    return Paced(size=96, n_blobs=2, sigma=6.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "live-retarget.gif")
    parser.add_argument("--move-at", type=int, default=12, help="step at which the target moves")
    parser.add_argument("--fps", type=float, default=8.0)
    args = parser.parse_args(argv)
    # The script must not change the user's remembered widget settings.
    os.environ.setdefault("NAPARI_FREEDRAG_SETTINGS", str(Path(tempfile.mkdtemp()) / "w.json"))

    import imageio.v3 as iio
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_freedrag.napari import layers as L
    from napari_freedrag.napari.widget import FreeDragWidget

    backend = paced_backend()
    viewer = napari.Viewer(title="FreeDrag: live re-targeting", show=True)
    viewer.window._qt_window.resize(1300, 640)
    widget = FreeDragWidget(viewer, backend=backend)
    viewer.window.add_dock_widget(widget, name="FreeDrag")
    app = QApplication.instance()

    def wait_idle():
        while widget.controller.running:
            app.processEvents()
            time.sleep(0.01)
        app.processEvents()

    widget.new_image()
    wait_idle()
    layers = widget.controller.layers
    edit = widget.controller.current_edit
    handle = np.round(backend.centres(edit.state.latent)[0].numpy(), 1)
    first = handle + [0.0, 30.0]  # to the right first ...
    moved = handle + [30.0, 10.0]  # ... then the user drags the target down
    layers.set_points_from_image(L.HANDLES, [handle])
    layers.set_points_from_image(L.TARGETS, [first])
    widget.method.value = "freedrag"
    widget.max_steps.value, widget.preview_every.value = 400, 1
    viewer.reset_view()

    frames: list[np.ndarray] = []
    moved_at: list[int] = []

    def on_status(text: str) -> None:
        running = re.match(r"running \w+: step (\d+) of", text)
        if running is None:
            return
        frames.append(np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3])
        step = int(running.group(1))
        if step >= args.move_at and not moved_at:  # the user drags the target elsewhere
            moved_at.append(step)
            target = layers.get(L.TARGETS)  # as napari's select-mode mouse drag does
            target.selected_data = {0}
            target._move([0], target.data[0])
            target._move([0], target.world_to_data(layers.working.data_to_world(moved)))
            target._drag_start = None

    widget.controller.status.connect(on_status)
    widget.run()
    wait_idle()
    frames.append(np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3])
    final = layers.points_in_image(L.HANDLES)[0]
    size = min(f.shape[0] for f in frames), min(f.shape[1] for f in frames)
    movie = np.stack([f[: size[0], : size[1]] for f in frames])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, movie, duration=1000.0 / args.fps, loop=0)
    print(
        f"handle {handle.tolist()} -> target {first.tolist()}, moved at step {moved_at} to "
        f"{moved.tolist()}; handle ended at {np.round(final, 1).tolist()} "
        f"({np.linalg.norm(final - moved):.1f} px from the new target, "
        f"{np.linalg.norm(final - first):.1f} px from the old); {len(movie)} frames -> "
        f"{args.out}; status: {widget.status.value!r}"
    )
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
