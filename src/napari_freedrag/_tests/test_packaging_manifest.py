"""napari finds the plugin: the top-level napari.yaml reaches npe2 from wheels and editables."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
MANIFEST = REPO / "napari.yaml"
PACKAGE = REPO / "src" / "napari_freedrag"

pytestmark = pytest.mark.skipif(
    not (REPO / "pyproject.toml").is_file(), reason="needs the source checkout, not an install"
)


def test_package_manifest_is_the_top_level_file():
    served = PACKAGE / "napari.yaml"
    assert served.is_symlink(), "src/napari_freedrag/napari.yaml must link to ../../napari.yaml"
    assert served.resolve() == MANIFEST.resolve()


def test_installed_plugin_serves_the_top_level_manifest():
    from importlib import resources
    from importlib.metadata import entry_points

    from npe2 import PluginManager

    (entry,) = entry_points(group="napari.manifest", name="napari-freedrag")
    package, resource = entry.value.split(":")
    assert (resources.files(package) / resource).read_bytes() == MANIFEST.read_bytes()

    manager = PluginManager()
    manager.discover(include_npe1=False)
    manifest = manager.get_manifest("napari-freedrag")
    assert manifest.display_name == "FreeDrag"
    assert [w.display_name for w in manifest.contributions.widgets] == ["FreeDrag"]
    assert [s.key for s in manifest.contributions.sample_data] == ["cells", "cells_stack"]
    assert [w.command for w in manifest.contributions.writers] == ["napari-freedrag.write_tiff"]
    ids = {c.id for c in manifest.contributions.commands}
    assert ids == {
        "napari-freedrag.make_freedrag_widget",
        "napari-freedrag.sample_cells",
        "napari-freedrag.sample_cells_stack",
        "napari-freedrag.write_tiff",
    }
    source = yaml.safe_load(MANIFEST.read_text())
    assert manifest.name == source["name"] == "napari-freedrag"


def _copy_source(destination: Path) -> Path:
    """The files a wheel is built from, symlinks kept, without build leftovers."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md", "napari.yaml"):
        shutil.copy2(REPO / name, destination / name)
    shutil.copytree(
        REPO / "src",
        destination / "src",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    return destination


def test_wheel_carries_the_manifest_as_a_real_file(tmp_path):
    source = _copy_source(tmp_path / "source")
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(dist), str(source)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("napari_freedrag-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo("napari_freedrag/napari.yaml")
        assert not stat.S_ISLNK(info.external_attr >> 16), "the wheel holds a link, not the file"
        assert archive.read(info) == MANIFEST.read_bytes()
        (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "[napari.manifest]" in text
    assert "napari-freedrag = napari_freedrag:napari.yaml" in text
    assert "napari-freedrag = napari_freedrag.cli:main" in text


@pytest.mark.napari
def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).with_name("npe2")
    proc = subprocess.run(
        [str(npe2), "validate", "napari-freedrag", "--imports"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout.lower()
