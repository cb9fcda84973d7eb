"""``napari-freedrag demo``: the headless path of README command 1, in a real window."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_freedrag.cli import main
from napari_freedrag.io import read_image, read_provenance

pytestmark = pytest.mark.napari


def test_demo_drags_in_the_viewer_and_saves_screenshots_and_report(tmp_path, capsys):
    pytest.importorskip("qtpy")
    status = main(["demo", "--out", str(tmp_path), "--max-steps", "4"])
    assert status == 0, capsys.readouterr().err

    before = read_image(tmp_path / "before.png")
    after = read_image(tmp_path / "after.png")
    assert before.shape == after.shape and before.shape[0] >= 300  # the whole window
    assert not np.array_equal(before, after), "the window did not change after the drag"

    report = json.loads((tmp_path / "report.json").read_text())
    assert 1 <= report["steps"] <= 4
    assert len(report["trace"]) == report["steps"]
    assert report["demo"]["widget"] == "FreeDragWidget"
    assert read_provenance(tmp_path / "after.png")["instruction"].startswith("drag (")


def test_main_job_viewer_shows_the_bundled_model_image(qtbot):
    from napari_freedrag.demo import open_viewer

    viewer, widget = open_viewer("cells", show=False, seed=2)
    try:
        controller = widget.controller
        qtbot.waitUntil(lambda: len(controller.history) == 1, timeout=60_000)
        qtbot.waitUntil(lambda: not controller.running, timeout=60_000)
        for name in ("handles", "targets", "mask", "arrows", "result (generated)"):
            assert f"FreeDrag {name}" in viewer.layers
        image = controller.layers.working.data
        assert image.ndim == 3 and image.std() > 0
        assert controller.current_edit.entry["seed"] == 2
    finally:
        viewer.close()
