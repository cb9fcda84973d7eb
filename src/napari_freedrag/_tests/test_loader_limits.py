"""Crafted weight files cannot make the loader take more memory than its budget."""

from __future__ import annotations

import json
import resource

import numpy as np
import pytest
import torch

from napari_freedrag._tests import hostile_files
from napari_freedrag._tests import nvidia_pickles as nv
from napari_freedrag.errors import ModelError
from napari_freedrag.models.stylegan2.budget import ENV_VAR
from napari_freedrag.models.stylegan2.checkpoint import build_generator, load_checkpoint

#: Words every refusal of a crafted file uses to say which limit it hit.
LIMIT_WORDS = (
    "budget",
    "declares",
    "must be",
    "numpy.ndarray",
    "not a StyleGAN2",
)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("name", list(hostile_files.FILE_CLASSES))
def test_each_crafted_file_class_is_refused_naming_the_limit(tmp_path, name):
    path = hostile_files.FILE_CLASSES[name](tmp_path)
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 10 * 2**20
    before = peak_rss_mib()

    with pytest.raises(ModelError) as refused:
        build_generator(*load_checkpoint(path))

    message = str(refused.value)
    assert path.name in message or path.with_suffix(".json").name in message
    assert any(word in message for word in LIMIT_WORDS), message
    assert "\n" not in message
    # The process never grew past the default budget (512 MiB + twice the file) and slack.
    assert peak_rss_mib() - before < 512 + 2 * 10 + 160


def test_the_budget_can_be_raised_and_a_bad_setting_is_named(tmp_path, monkeypatch):
    path = hostile_files.overlapping_views(tmp_path)
    monkeypatch.setenv(ENV_VAR, "2000")
    with pytest.raises(ModelError) as refused:
        load_checkpoint(path)
    assert "budget" not in str(refused.value)  # read whole; then refused as not a generator
    assert "does not hold StyleGAN2 generator weights" in str(refused.value)

    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ModelError, match=f"{ENV_VAR}='lots' is not a positive number"):
        load_checkpoint(path)


def test_protocol_2_pickles_of_plain_tensors_load(tmp_path, tiny64):
    _, weights, config = tiny64
    path = tmp_path / "old-python.pkl"
    nv.write_pickle(path, nv.snapshot(weights, config), protocol=2)

    _, state_dict = load_checkpoint(path)

    for name, value in weights.items():
        np.testing.assert_array_equal(state_dict[name].numpy(), value, err_msg=name)


def test_nan_weights_are_reported_as_damaged_weights(tmp_path, tiny64):
    _, weights, config = tiny64
    broken = dict(weights)
    broken["mapping.fc0.weight"] = np.full_like(weights["mapping.fc0.weight"], np.nan)
    path = tmp_path / "nan.pkl"
    nv.write_pickle(path, nv.snapshot(broken, config))

    with pytest.raises(ModelError, match=r"mapping\.fc0\.weight contain NaN or inf"):
        load_checkpoint(path)


def test_float16_weights_are_charged_as_the_float32_copies_they_become(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    path = tmp_path / "half.pt"
    torch.save({"mapping.fc0.weight": torch.zeros(2**20, dtype=torch.float16)}, path)
    path.with_suffix(".json").write_text(json.dumps(hostile_files.TINY_CONFIG))
    monkeypatch.setenv(ENV_VAR, "5")  # 2 MiB stored + 4 MiB as float32 > 5 MiB
    with pytest.raises(ModelError, match="as float32 needs 4.0 MiB, past the loading budget"):
        load_checkpoint(path)

    save_file({"w": torch.zeros(2**21)}, str(tmp_path / "big.safetensors"))
    (tmp_path / "big.json").write_text(json.dumps(hostile_files.TINY_CONFIG))
    with pytest.raises(ModelError, match="tensor w needs 8.0 MiB"):
        load_checkpoint(tmp_path / "big.safetensors")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"img_resolution": 4096}, "img_resolution must be a power of two from 4 to 2048"),
        ({"img_resolution": 48}, "img_resolution must be a power of two"),
        ({"img_resolution": "64"}, "img_resolution must be a power of two"),
        ({"z_dim": 0}, "z_dim must be an integer from 1 to 4096"),
        ({"w_dim": 10**6}, "w_dim must be an integer from 1 to 4096"),
        ({"img_channels": 5}, "img_channels must be an integer from 1 to 4"),
        ({"channel_max": 4096}, "channel_max must be an integer from 1 to 2048"),
        ({"img_resolution": 128}, "channel_base 64 leaves no channels at 128 px"),
        ({"num_fp16_res": True}, "num_fp16_res must be an integer"),
        ({"conv_clamp": -1}, r"conv_clamp must be a number from 0 to 1e\+06"),
        ({"mapping_kwargs": {"num_layers": 1000}}, "num_layers must be an integer from 1 to 32"),
        ({"mapping_kwargs": [1]}, "mapping_kwargs must be a JSON object"),
        ({"extra": list(range(5000))}, "holds more than 1000 values"),
    ],
)
def test_every_config_value_is_bounded(tmp_path, change, named):
    from safetensors.torch import save_file

    path = tmp_path / "g.safetensors"
    save_file({"mapping.fc0.weight": torch.zeros(1)}, str(path))
    path.with_suffix(".json").write_text(json.dumps({**hostile_files.TINY_CONFIG, **change}))
    with pytest.raises(ModelError, match=named):
        load_checkpoint(path)


def test_a_large_config_with_tiny_weights_is_refused_before_building_it():
    config = {
        **hostile_files.TINY_CONFIG,
        "img_resolution": 2048,
        "channel_base": 2**20,
        "channel_max": 2048,
        "w_dim": 4096,
    }
    before = peak_rss_mib()
    with pytest.raises(ModelError, match="do not fit its generator config: missing"):
        build_generator(config, {"mapping.fc0.weight": torch.zeros(8, 8)})
    assert peak_rss_mib() - before < 100  # the network (several GB) was laid out on "meta"
