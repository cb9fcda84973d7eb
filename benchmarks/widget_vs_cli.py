"""The same drag in the widget and in the CLI: wall time, and how long the event loop stalls.

A viewer is opened the way a user opens it (the widget docked from the Plugins menu,
window shown), a working image is made, one handle and target are placed, the Run button
is clicked and the threaded run is awaited with the Qt event loop turning.  A 5 ms Qt
heartbeat timer records every gap in the event loop while the drag runs: its longest gap
is the longest time the window could not answer the mouse.  Then the same instruction
(model, seed, points, step budget) runs as ``napari-freedrag edit`` in a fresh process
and through the engine alone (``drag()`` in this process, no viewer).

Two scenarios: ``seed`` (a new image from a seed, RGB: the CLI runs exactly the same
drag) and ``stack`` (plane z=3 of the uint16 µm z-stack sample picked as the source and
projected into the model, edited in place; the CLI runs the same points and step budget
from the plane's seed, so its trajectory is close, not equal).  Run under Xvfb:

    OMP_NUM_THREADS=2 xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python \
        benchmarks/widget_vs_cli.py --repeats 3 --json widget-vs-cli.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLANE = 3


class Heartbeat:
    """The longest gaps between ticks of a fast Qt timer: event-loop stalls."""

    def __init__(self, interval_ms: int = 5):
        from qtpy.QtCore import QTimer

        self.gaps: list[float] = []
        self.ends: list[float] = []
        self._last = self._began = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self.ends.append(now - self._began)
        self._last = now

    def start(self) -> None:
        self.gaps.clear()
        self.ends.clear()
        self._last = self._began = time.perf_counter()
        self._timer.start()

    def stop(self) -> dict[str, float]:
        self._timer.stop()
        gaps = sorted(self.gaps) or [0.0]
        worst = max(range(len(self.gaps)), key=self.gaps.__getitem__, default=None)
        return {
            "longest_stall_s": gaps[-1],
            "longest_stall_ended_at_s": None if worst is None else self.ends[worst],
            "stalls_over_100ms": sum(g > 0.1 for g in gaps),
            "p99_gap_s": gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))],
        }


def viewer_runs(scenario: str, max_steps: int, repeats: int, seed: int) -> dict:
    """Click Run ``repeats`` times on the same instruction (each from the same start edit)."""
    from qtpy.QtWidgets import QApplication

    from napari_freedrag.demo import open_viewer, pick_drag, pick_sample_plane, wait_until_idle
    from napari_freedrag.napari import layers as L

    viewer, widget = open_viewer("cells", show=True, seed=seed, new_image=False)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 900)
    if scenario == "stack":
        pick_sample_plane(viewer, widget, PLANE)
    widget.new_image()
    wait_until_idle(widget)
    controller = widget.controller
    start_index = controller.history.current_index
    handle, target = pick_drag(controller.current_edit.display())
    widget.max_steps.value = max_steps
    beat = Heartbeat()
    runs = []
    for _ in range(repeats):
        controller.select_edit(start_index)
        controller.layers.set_points_from_image(L.HANDLES, [handle])
        controller.layers.set_points_from_image(L.TARGETS, [target])
        for _ in range(10):
            app.processEvents()
        statuses: list[float] = []
        listener = widget.status.changed.connect(
            lambda _value, seen=statuses: seen.append(time.perf_counter())
        )
        beat.start()
        started = time.perf_counter()
        widget.run_button.clicked.emit()
        app.processEvents()
        wait_until_idle(widget)
        seconds = time.perf_counter() - started
        stalls = beat.stop()
        widget.status.changed.disconnect(listener)
        entry = controller.current_edit.entry
        if entry.get("instruction") is None:
            raise SystemExit(f"Run made no edit: {widget.status.value}")
        first_status = statuses[0] - started if statuses else None
        runs.append({
            "click_to_result_s": seconds,
            "engine_s": entry["seconds"],
            "steps": entry["steps"],
            "first_status_s": first_status,
            **stalls,
        })  # fmt: skip
    seed_used = controller.current_edit.entry.get("seed")
    repaint = repaint_seconds(viewer, app)
    viewer.close()
    return {
        "handle": handle, "target": target, "seed": seed_used, "runs": runs,
        "repaint_s": repaint,
    }  # fmt: skip


def repaint_seconds(viewer, app, times: int = 10) -> dict[str, float]:
    """Median time of one repaint of the unchanged canvas and of the whole window: the floor
    under any event-loop stall that shows something new (software OpenGL makes it large)."""
    canvas = viewer.window._qt_viewer.canvas._scene_canvas  # vispy's canvas of the viewer
    window = viewer.window._qt_window
    app.processEvents()
    seconds: dict[str, list[float]] = {"canvas": [], "window": []}
    for _ in range(times):
        for name, request in (("canvas", canvas.update), ("window", window.update)):
            began = time.perf_counter()
            request()
            app.processEvents()
            seconds[name].append(time.perf_counter() - began)
    return {name: statistics.median(values) for name, values in seconds.items()}


def cli_runs(handle, target, seed: int, max_steps: int, repeats: int) -> list[dict]:
    """The whole ``napari-freedrag edit`` command, each in a fresh process."""
    runs = []
    drag = f"{handle[0]:g},{handle[1]:g}:{target[0]:g},{target[1]:g}"
    exe = Path(sys.executable).with_name("napari-freedrag")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            began = time.perf_counter()
            subprocess.run(
                [str(exe), "edit", "--model", "cells", "--seed", str(seed), "--drag", drag,
                 "--max-steps", str(max_steps), "--device", "cpu",
                 "--out", str(Path(tmp) / "edit.png"), "--report", str(report)],
                check=True, env=os.environ.copy(),
            )  # fmt: skip
            wall = time.perf_counter() - began
            data = json.loads(report.read_text())
        runs.append({"whole_command_s": wall, "engine_s": data["seconds"], "steps": data["steps"]})
    return runs


def engine_runs(handle, target, seed: int, max_steps: int, repeats: int) -> list[dict]:
    """``drag()`` in this process on the same model and instruction: no viewer at all."""
    import numpy as np

    from napari_freedrag.engine.run import drag
    from napari_freedrag.models.registry import load_generator

    gen = load_generator("cells")
    start = gen.sample(seed=seed)
    runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        result = drag(gen, start, np.array([handle]), np.array([target]), max_steps=max_steps)
        runs.append({"wall_s": time.perf_counter() - began, "steps": result.steps})
    return runs


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["seed", "stack"])
    parser.add_argument("--max-steps", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    threads = torch.get_num_threads()
    results = {
        "threads": threads,
        "load_average_at_start": os.getloadavg(),
        "max_steps": args.max_steps,
        "scenarios": {},
    }
    for scenario in args.scenarios:
        viewer = viewer_runs(scenario, args.max_steps, args.repeats, args.seed)
        handle, target, seed = viewer["handle"], viewer["target"], viewer["seed"]
        cli = cli_runs(handle, target, seed, args.max_steps, args.repeats)
        engine = engine_runs(handle, target, seed, args.max_steps, args.repeats)
        row = {"viewer": viewer, "cli": cli, "engine": engine}
        results["scenarios"][scenario] = row
        runs = viewer["runs"]
        click, cli_engine = median(runs, "click_to_result_s"), median(cli, "engine_s")
        command = median(cli, "whole_command_s")
        stall = max(r["longest_stall_s"] for r in runs)
        repaint = viewer["repaint_s"]
        first = max(r["first_status_s"] or 0.0 for r in runs)
        print(
            f"{scenario}: seed {seed}, drag {handle} -> {target}, {args.max_steps} steps max, "
            f"{threads} torch threads: viewer click-to-result {click:.2f} s "
            f"(engine {median(runs, 'engine_s'):.2f} s, {runs[0]['steps']} steps), "
            f"longest event-loop stall {stall * 1e3:.0f} ms (a bare repaint: canvas "
            f"{repaint['canvas'] * 1e3:.0f} ms, window {repaint['window'] * 1e3:.0f} ms), "
            "first status after "
            f"{first * 1e3:.0f} ms; CLI whole command {command:.2f} s (engine {cli_engine:.2f} s, "
            f"{cli[0]['steps']} steps); engine alone {median(engine, 'wall_s'):.2f} s; "
            f"viewer / CLI command {click / command:.2f}x, viewer / CLI engine "
            f"{click / cli_engine:.2f}x",
            flush=True,
        )
    results["load_average_at_end"] = os.getloadavg()
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
