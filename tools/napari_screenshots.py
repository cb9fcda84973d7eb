"""Screenshots for docs/napari-guide.md: a uint16 µm-scaled z-stack edited in place.

Drives the viewer the way a user does: the window ``napari-freedrag`` opens (widget docked
from the Plugins menu), File > Open Sample > "FreeDrag cells z-stack (uint16, µm)", the
view moved to plane z=3, that plane picked as the source image, New image, a handle and a
target placed, the Run button clicked and the threaded run awaited with the Qt event loop
turning.  Then the same instruction runs through ``napari-freedrag edit`` and both wall
times are printed.  Run under Xvfb:

    OMP_NUM_THREADS=1 xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python \
        tools/napari_screenshots.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PLANE = 3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)

    from qtpy.QtWidgets import QApplication

    from napari_freedrag import io
    from napari_freedrag.cli import main as cli
    from napari_freedrag.demo import open_viewer, pick_drag, pick_sample_plane, wait_until_idle
    from napari_freedrag.napari import layers as L

    args.out.mkdir(parents=True, exist_ok=True)
    viewer, widget = open_viewer("cells", show=True, new_image=False)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 900)
    stack = pick_sample_plane(viewer, widget, PLANE)
    widget.new_image()
    wait_until_idle(widget)
    controller = widget.controller
    handle, target = pick_drag(controller.layers.working.data[0])
    controller.layers.set_points_from_image(L.HANDLES, [handle])
    controller.layers.set_points_from_image(L.TARGETS, [target])
    widget.max_steps.value = args.max_steps
    viewer.layers.selection.active = controller.layers.get(L.HANDLES)
    provenance = {"model": "cells", "source": stack.name, "plane": PLANE}

    def shot(name: str) -> Path:
        for _ in range(5):
            app.processEvents()
            time.sleep(0.05)
        image = viewer.screenshot(canvas_only=False, flash=False)
        return io.write_image(args.out / name, np.asarray(image)[..., :3], provenance)

    step = tuple(viewer.dims.current_step)
    shot("napari-before.png")
    started = time.perf_counter()
    widget.run_button.clicked.emit()
    wait_until_idle(widget)
    viewer_seconds = time.perf_counter() - started
    shot("napari-after.png")
    entry = controller.current_edit.entry
    if entry["instruction"] is None:
        raise SystemExit(f"Run made no edit: {widget.status.value}")
    assert tuple(viewer.dims.current_step) == step, "the view left the user's plane"
    seed, status = entry["seed"], widget.status.value
    viewer.close()

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        drag = f"{handle[0]:g},{handle[1]:g}:{target[0]:g},{target[1]:g}"
        began = time.perf_counter()
        cli(["edit", "--model", "cells", "--seed", str(seed), "--drag", drag,
             "--max-steps", str(args.max_steps), "--device", "cpu",
             "--out", str(Path(tmp) / "edit.png"), "--report", str(report)])  # fmt: skip
        cli_seconds = time.perf_counter() - began
        cli_report = json.loads(report.read_text())
    final = np.round(entry["instruction"]["final_points"], 1).tolist()
    print(
        f"plane z={PLANE} of {stack.name!r} (seed {seed}): drag {handle} -> {target}: "
        f"viewer {entry['steps']} steps, engine {entry['seconds']:.2f} s, click to edit shown "
        f"{viewer_seconds:.2f} s; CLI {cli_report['steps']} steps, engine "
        f"{cli_report['seconds']:.2f} s, whole command {cli_seconds:.2f} s; handle now at "
        f"{final}; status: {status!r}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
