"""Shared test set-up: one torch thread (2 shared cores run 7-20x slower with more)."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """NVIDIA's reference generators, committed under ``_tests/data`` (see its README).

    ``NAPARI_FREEDRAG_FIXTURES`` may point at a fuller copy (all three tiny256 seeds).
    """
    path = Path(os.environ.get("NAPARI_FREEDRAG_FIXTURES", Path(__file__).parent / "data"))
    if not (path / "stylegan2" / "tiny64" / "weights.npz").is_file():
        raise FileNotFoundError(f"reference fixtures missing at {path}")
    return path


@pytest.fixture(scope="session")
def tiny64(shared_fixtures):
    """NVIDIA's tiny64 reference generator: ``(folder, weights by state-dict name, config)``."""
    folder = shared_fixtures / "stylegan2" / "tiny64"
    with np.load(folder / "weights.npz") as arrays:
        weights = {name: arrays[name] for name in arrays.files}
    return folder, weights, json.loads((folder / "config.json").read_text())


@pytest.fixture(scope="session")
def tiny_ldm_folder(tmp_path_factory):
    """A random-weight SD 1.x-topology diffusers folder, built once per test run."""
    from napari_freedrag._tests.ldm_tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("ldm") / "tiny-sd")


@pytest.fixture(autouse=True)
def widget_settings_file(tmp_path, monkeypatch) -> Path:
    """Each test remembers widget settings in its own file, never in the user's config."""
    path = tmp_path / "freedrag-settings" / "widget.json"
    monkeypatch.setenv("NAPARI_FREEDRAG_SETTINGS", str(path))
    return path


@pytest.fixture(scope="module")
def gen():
    """The analytic backend; a module testing another backend defines its own ``gen``."""
    from napari_freedrag.models.analytic import AnalyticBackend

    return AnalyticBackend()


@pytest.fixture(scope="module")
def start(gen):
    """The three-blob start state of :data:`analytic_scene.BLOB_CENTRES` on ``gen``."""
    from napari_freedrag._tests.analytic_scene import BLOB_CENTRES

    return gen.from_centres(BLOB_CENTRES)
