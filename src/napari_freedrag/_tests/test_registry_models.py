"""MODEL strings -> backends: categories in the checkpoint folder, paths, devices, cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from napari_freedrag import config
from napari_freedrag._tests import nvidia_pickles as nv
from napari_freedrag.errors import InputError, ModelError
from napari_freedrag.models import registry
from napari_freedrag.models.stylegan2.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty checkpoint folder named by NAPARI_FREEDRAG_HOME."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    monkeypatch.setenv("NAPARI_FREEDRAG_HOME", str(folder))
    return folder


def test_checkpoint_dir_follows_napari_freedrag_home(home, monkeypatch):
    assert config.checkpoint_dir() == home
    monkeypatch.delenv("NAPARI_FREEDRAG_HOME")
    assert config.checkpoint_dir().parts[-3:] == (".cache", "napari-freedrag", "checkpoints")


def test_category_found_loads_with_its_preset(home, tiny64):
    folder, _, _ = tiny64
    save_checkpoint(home / "stylegan2_lions_512_pytorch", *load_checkpoint(folder / "weights.npz"))

    backend = registry.load_generator("lions", device="cpu")

    assert backend.name == "stylegan2_lions_512_pytorch.safetensors"
    assert backend.kind == "stylegan2"
    preset = backend.preset("freedrag", backend.image_size)
    assert (preset.l, preset.d) == (0.4, 4.0)
    assert backend.sample(0).image.shape == (64, 64, 3)


def test_category_as_nvidia_pickle_and_singular_alias(home, tiny64):
    _, weights, config = tiny64
    nv.write_pickle(home / "stylegan2-ffhq-512x512.pkl", nv.snapshot(weights, config))

    backend = registry.load_generator("Face", device="cpu")

    assert backend.name == "stylegan2-ffhq-512x512.pkl"
    assert (backend.preset("freedrag", backend.image_size).l) == 0.3


def test_missing_category_says_what_to_download_and_where(home):
    with pytest.raises(ModelError) as caught:
        registry.load_generator("elephants", device="cpu")
    message = str(caught.value)
    assert "stylegan2_elephants_512_pytorch.pkl" in message
    assert (
        "https://storage.googleapis.com/self-distilled-stylegan/elephants_512_pytorch.pkl"
        in message
    )
    assert str(home) in message


def test_unknown_model_lists_what_is_accepted(home):
    with pytest.raises(
        ModelError, match="unknown model 'unicorns': use one of: cells, faces, cats"
    ):
        registry.load_generator("unicorns", device="cpu")
    with pytest.raises(ModelError, match="checkpoint file not found: .*absent.pkl"):
        registry.load_generator(str(home / "absent.pkl"), device="cpu")
    with pytest.raises(ModelError, match="is a folder: for a diffusers model use ldm:"):
        registry.load_generator(str(home), device="cpu")


@pytest.mark.parametrize("device", ["tpu", "cuda:99", "gpu0"])
def test_bad_device_is_an_input_error(device):
    with pytest.raises(InputError, match=f"device '{device}'"):
        config.resolve_device(device)


def test_devices_that_exist_resolve():
    assert config.resolve_device("cpu") == torch.device("cpu")
    assert config.resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else config.resolve_device("auto").type
    assert config.resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU is available"):
            config.resolve_device("cuda")


def test_every_file_format_loads_the_same_generator(tmp_path, home, tiny64):
    folder, weights, config = tiny64
    nv.write_pickle(tmp_path / "g.pkl", nv.snapshot(weights, config, "stylegan3"))
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, tmp_path / "g.pt")
    (tmp_path / "g.json").write_text(json.dumps(config["init_kwargs"]))
    save_checkpoint(tmp_path / "s", *load_checkpoint(folder / "weights.npz"))
    paths = [
        tmp_path / "g.pkl",
        tmp_path / "g.pt",
        tmp_path / "s.safetensors",
        folder / "weights.npz",
    ]

    images = [registry.load_generator(os.fspath(p), device="cpu").sample(0).image for p in paths]

    for path, image in zip(paths[1:], images[1:], strict=True):
        np.testing.assert_array_equal(image, images[0], err_msg=path.name)
    reference = np.load(folder / "reference.npz")["img_psi07_uint8"][0]
    assert np.abs(images[0].astype(int) - reference.astype(int)).max() <= 1


def test_second_load_reuses_the_generator_and_a_changed_file_reloads(tmp_path, home, tiny64):
    folder, _, _ = tiny64
    config, state_dict = load_checkpoint(folder / "weights.npz")
    path = save_checkpoint(tmp_path / "mine", config, state_dict)

    first = registry.load_generator(path, device="cpu")
    second = registry.load_generator(str(path), device="cpu")
    assert second.generator is first.generator

    state_dict["synthesis.b4.const"] = state_dict["synthesis.b4.const"] + 1
    save_checkpoint(tmp_path / "mine", config, state_dict)
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    third = registry.load_generator(path, device="cpu")
    assert third.generator is not first.generator
    assert not np.array_equal(third.sample(0).image, first.sample(0).image)


def test_cells_uses_the_bundled_weights_or_says_they_are_missing(
    tmp_path, home, tiny64, monkeypatch
):
    folder, _, _ = tiny64
    missing = tmp_path / "weights" / "cells.safetensors"
    monkeypatch.setattr(registry, "_bundled_path", lambda: missing)
    with pytest.raises(ModelError, match="bundled model missing"):
        registry.load_generator("cells", device="cpu")
    assert registry.known_models()[0].path_found is None

    save_checkpoint(missing, *load_checkpoint(folder / "weights.npz"))
    backend = registry.load_generator(device="cpu")
    assert backend.name == "cells"
    entry = registry.known_models()[0]
    assert (entry.name, entry.resolution, entry.path_found) == ("cells", 64, missing)


def test_ldm_models_go_to_the_diffusion_loader(monkeypatch):
    calls = []
    monkeypatch.setattr(
        "napari_freedrag.models.ldm.loading.load_ldm",
        lambda spec, device: calls.append((spec, device)),
    )
    registry.load_generator("ldm:/models/sd15", device="cpu")
    assert calls == [("/models/sd15", torch.device("cpu"))]


def test_models_table_shows_found_and_missing_with_presets(home, tiny64):
    folder, _, _ = tiny64
    save_checkpoint(home / "stylegan2_dogs_1024_pytorch", *load_checkpoint(folder / "weights.npz"))

    entries = {entry.name: entry for entry in registry.known_models()}
    table = registry.format_models_table()

    assert entries["dogs"].path_found == home / "stylegan2_dogs_1024_pytorch.safetensors"
    assert (entries["dogs"].l, entries["dogs"].d) == (0.4, 4.0)
    assert entries["faces"].path_found is None
    assert {"cells", "faces", "cats", "wild", "horses", "giraffes", "churches", "metfaces"} <= set(
        entries
    )
    dogs_line = next(line for line in table.splitlines() if line.startswith("dogs "))
    assert "0.4/4" in dogs_line and f"found: {home}" in dogs_line
    faces_line = next(line for line in table.splitlines() if line.startswith("faces "))
    assert "missing: get stylegan2-ffhq-512x512.pkl from https://" in faces_line
    assert f"Checkpoint folder: {home}" in table
