"""The command line works on machines without a display or a Qt binding."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Runs in a fresh interpreter so that modules other tests imported cannot hide an import.
PROBE = textwrap.dedent(
    """
    import contextlib, io, sys
    import napari_freedrag.cli as cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            status = cli.main(sys.argv[1:])
        except SystemExit as exc:  # --help exits through argparse
            status = exc.code
    gui = sorted(
        m for m in sys.modules
        if m == "napari" or m.startswith(("napari.", "PyQt", "PySide", "qtpy", "vispy"))
    )
    print(out.getvalue())
    print("GUI-MODULES:", gui)
    sys.exit(status)
    """
)


def _probe(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("argv", [["--help"], ["edit", "--help"]])
def test_help_imports_no_qt_or_napari(argv):
    proc = _probe(*argv)
    assert proc.returncode == 0, proc.stderr
    assert "usage: napari-freedrag" in proc.stdout
    assert "GUI-MODULES: []" in proc.stdout


def test_models_lists_the_bundled_model_without_qt_or_napari():
    proc = _probe("models")
    assert proc.returncode == 0, proc.stderr
    assert "cells" in proc.stdout
    assert "GUI-MODULES: []" in proc.stdout


def test_help_names_every_command():
    proc = _probe("--help")
    for command in ("edit", "models", "bench", "train-cells", "demo"):
        assert command in proc.stdout


def test_viewer_without_a_display_says_what_to_do_instead():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    if not sys.platform.startswith("linux"):
        pytest.skip("only Linux needs an X or Wayland display")
    proc = subprocess.run(
        [sys.executable, "-m", "napari_freedrag"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display" in lines[0] and "xvfb-run" in lines[0], proc.stderr


@pytest.mark.parametrize("command", ["bench", "train-cells"])
def test_passthrough_commands_reach_their_own_options(command):
    proc = _probe(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: napari-freedrag {command}" in proc.stdout
    assert "GUI-MODULES: []" in proc.stdout


def test_without_torch_an_edit_is_one_line_naming_what_to_install(tmp_path):
    """torch is not a dependency (its build depends on the hardware): a user who has not
    installed it gets one line, exit 2, and no file is written."""
    out = tmp_path / "edit.png"
    hide_torch = "import sys; sys.modules['torch'] = None; " + PROBE
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.run(
        [sys.executable, "-c", hide_torch, "edit", "--seed", "0", "--drag", "30,30:30,40"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "napari-freedrag: error: PyTorch is not installed: install the build for your hardware"
        " (pip install torch)"
    ]
    assert not out.exists()
