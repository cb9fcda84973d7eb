"""Loading StyleGAN2 weights from the files users have, and refusing files that run code."""

from __future__ import annotations

import builtins
import copyreg
import json
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

from napari_freedrag._tests import nvidia_pickles as nv
from napari_freedrag.errors import ModelError, UnsafeCheckpointError
from napari_freedrag.models.stylegan2.checkpoint import (
    build_generator,
    load_checkpoint,
    save_checkpoint,
)

EXPECTED_CONFIG = {
    "z_dim": 64,
    "c_dim": 0,
    "w_dim": 128,
    "img_resolution": 64,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 2048,
    "channel_max": 128,
    "num_fp16_res": 4,
    "conv_clamp": 256,
}


def assert_same_weights(state_dict, weights):
    assert set(state_dict) == set(weights)
    for name, value in weights.items():
        assert state_dict[name].dtype == torch.float32
        np.testing.assert_array_equal(state_dict[name].numpy(), value, err_msg=name)


@pytest.mark.parametrize(("layout", "protocol"), [("ada", 3), ("stylegan3", 4)])
def test_nvidia_snapshot_pickle_gives_g_ema_weights_and_flat_config(
    tmp_path, tiny64, layout, protocol
):
    _, weights, config = tiny64
    path = tmp_path / "network-snapshot-000100.pkl"
    nv.write_pickle(path, nv.snapshot(weights, config, layout), protocol=protocol)

    loaded_config, state_dict = load_checkpoint(path)

    assert loaded_config == EXPECTED_CONFIG
    assert_same_weights(state_dict, weights)  # G holds zeros: this proves G_ema was read


def test_fake_pickle_names_exactly_the_globals_real_files_name(tmp_path, tiny64):
    _, weights, config = tiny64
    path = tmp_path / "ffhq.pkl"
    nv.write_pickle(path, nv.snapshot(weights, config, "ada"), protocol=3)
    assert nv.pickle_globals(path) == {
        "torch_utils.persistence._reconstruct_persistent_obj",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_tensor_v2",
        "torch.storage._load_from_bytes",
        "collections.OrderedDict",
        "builtins.set",
        "numpy.dtype",
        "numpy._core.multiarray.scalar",
        "dnnlib.util.EasyDict",
    }


def test_files_written_with_numpy_1_and_g_ema_only_files_load(tmp_path, tiny64):
    _, weights, config = tiny64
    path = tmp_path / "stylegan2-ffhq-512x512.pkl"
    nv.write_pickle(path, {"G_ema": nv.generator_object(weights, config, "stylegan3")}, protocol=3)
    old_numpy = path.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert old_numpy != path.read_bytes()
    path.write_bytes(old_numpy)

    loaded_config, state_dict = load_checkpoint(path)

    assert loaded_config == EXPECTED_CONFIG
    assert_same_weights(state_dict, weights)


@pytest.mark.parametrize("layout", ["ada", "converted"])
def test_nvidia_pickle_renders_the_official_image(tmp_path, tiny64, layout):
    folder, weights, config = tiny64
    path = tmp_path / "tiny64.pkl"
    nv.write_pickle(path, nv.snapshot(weights, config, layout))
    generator = build_generator(*load_checkpoint(path))
    reference = np.load(folder / "reference.npz")

    with torch.no_grad():
        ws = generator.mapping(torch.from_numpy(reference["z"][0:1]), None, truncation_psi=0.7)
        image = generator.synthesis(ws, noise_mode="const").numpy()

    expected = reference["img_psi07"][0:1]
    assert np.linalg.norm(image - expected) / np.linalg.norm(expected) < 1e-5


@pytest.mark.parametrize(
    ("attack", "named"),
    [
        (lambda marker: nv.Reduce(os.system, f"touch {marker}"), "system"),
        (
            lambda marker: nv.Reduce(builtins.exec, f"open({str(marker)!r}, 'w').write('x')"),
            "builtins.exec",
        ),
        (lambda marker: nv.Reduce(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
    ],
    ids=["os.system", "builtins.exec", "subprocess.Popen"],
)
def test_pickle_asking_to_run_code_is_refused_unrun(tmp_path, tiny64, attack, named):
    _, weights, config = tiny64
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    nv.write_pickle(
        path, nv.snapshot(weights, config, extra={"training_set_kwargs": attack(marker)})
    )

    with pytest.raises(
        UnsafeCheckpointError, match=f"refusing to load evil.pkl: the file asks to run .*{named}"
    ):
        load_checkpoint(path)
    assert not marker.exists()


def test_code_hidden_in_a_tensor_storage_blob_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(nv.Reduce(os.system, f"touch {marker}"), protocol=2)
    path = tmp_path / "evil.pkl"
    nv.write_pickle(path, {"G_ema": nv.Reduce(torch.storage._load_from_bytes, blob)})

    with pytest.raises(UnsafeCheckpointError, match=r"asks to run (posix|nt)\.system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_pickle_extension_code_cannot_reach_a_registered_global(tmp_path):
    # copyreg's extension registry resolves codes through a process-wide cache that
    # bypasses find_class: once anything in the process has unpickled code 240, a file
    # naming it would call os.system without ever naming it.
    marker = tmp_path / "pwned"
    copyreg.add_extension("os", "system", 240)
    try:
        assert pickle.loads(b"\x80\x02\x82\xf0.") is os.system  # now cached
        path = tmp_path / "evil.pkl"
        path.write_bytes(b"\x80\x02\x82\xf0X" + len(f"touch {marker}").to_bytes(4, "little")
                         + f"touch {marker}".encode() + b"\x85R.")  # fmt: skip
        with pytest.raises(UnsafeCheckpointError, match="extension code"):
            load_checkpoint(path)
    finally:
        copyreg.remove_extension("os", "system", 240)
        copyreg.clear_extension_cache()
    assert not marker.exists()


def test_embedded_module_source_is_never_executed(tmp_path, tiny64):
    _, weights, config = tiny64
    marker = tmp_path / "pwned"
    source = f"open({str(marker)!r}, 'w').write('executed')\n"
    path = tmp_path / "ffhq.pkl"
    nv.write_pickle(path, nv.snapshot(weights, config, module_src=source))

    _, state_dict = load_checkpoint(path)

    assert not marker.exists()
    assert_same_weights(state_dict, weights)


def test_torch_file_asking_to_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"mapping.fc0.weight": nv.Reduce(os.system, f"touch {marker}")}, path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_random_and_foreign_pickles_give_model_errors(tmp_path, tiny64):
    _, weights, config = tiny64
    good = tmp_path / "good.pkl"
    nv.write_pickle(good, nv.snapshot(weights, config))
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(ModelError, match="truncated.pkl.*truncated"):
        load_checkpoint(truncated)

    noise = tmp_path / "noise.pkl"
    noise.write_bytes(b"\xff" + np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match="could not read noise.pkl"):
        load_checkpoint(noise)

    a_list = tmp_path / "list.pkl"
    a_list.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ModelError, match="list.pkl holds a list, not a StyleGAN2 network"):
        load_checkpoint(a_list)

    no_g_ema = tmp_path / "d_only.pkl"
    nv.write_pickle(no_g_ema, {"D": nv.persistent("Discriminator", nv.module_state())})
    with pytest.raises(ModelError, match="holds no G_ema network \\(found D\\)"):
        load_checkpoint(no_g_ema)


def test_stylegan3_networks_are_named_as_unsupported(tmp_path, tiny64):
    _, weights, config = tiny64
    by_layers = {
        name.replace("synthesis.b4.", "synthesis.L0_36_512."): v for name, v in weights.items()
    }
    path = tmp_path / "stylegan3-t-ffhq-1024x1024.pkl"
    nv.write_pickle(path, {"G_ema": nv.generator_object(by_layers, config, "stylegan3")})
    with pytest.raises(ModelError, match="StyleGAN3 networks are not supported yet"):
        load_checkpoint(path)

    generator = nv.generator_object(weights, config, "stylegan3")
    generator.meta["state"]["_init_kwargs"]["magnitude_ema_beta"] = 0.999
    nv.write_pickle(path, {"G_ema": generator})
    with pytest.raises(ModelError, match="StyleGAN3 networks are not supported yet"):
        load_checkpoint(path)


def test_safetensors_round_trip_and_npz_fixture_layout(tmp_path, tiny64):
    folder, weights, _ = tiny64
    config, state_dict = load_checkpoint(folder / "weights.npz")
    assert config == EXPECTED_CONFIG
    assert_same_weights(state_dict, weights)

    written = save_checkpoint(tmp_path / "mine", config, state_dict, info={"trained": "test"})

    assert written == tmp_path / "mine.safetensors"
    assert json.loads((tmp_path / "mine.json").read_text())["info"] == {"trained": "test"}
    again_config, again = load_checkpoint(written)
    assert again_config == EXPECTED_CONFIG
    assert_same_weights(again, weights)


def test_pt_state_dict_with_json_beside_it(tmp_path, tiny64):
    _, weights, config = tiny64
    torch.save(
        {name: torch.from_numpy(value) for name, value in weights.items()}, tmp_path / "g.pt"
    )
    with pytest.raises(
        ModelError, match=r"g.pt needs its generator config beside it: expected .*g.json"
    ):
        load_checkpoint(tmp_path / "g.pt")

    (tmp_path / "g.json").write_text(json.dumps(config["init_kwargs"]))
    loaded_config, state_dict = load_checkpoint(tmp_path / "g.pt")
    assert loaded_config == EXPECTED_CONFIG
    assert_same_weights(state_dict, weights)


def test_missing_config_and_foreign_tensor_files_are_explained(tmp_path):
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(
        ModelError, match="needs its generator config beside it: expected .*other.json"
    ):
        load_checkpoint(tmp_path / "other.safetensors")
    (tmp_path / "other.json").write_text(json.dumps(EXPECTED_CONFIG))
    with pytest.raises(ModelError, match="does not hold StyleGAN2 generator weights"):
        load_checkpoint(tmp_path / "other.safetensors")
    with pytest.raises(ModelError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "absent.pkl")
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown checkpoint format"):
        load_checkpoint(tmp_path / "weights.h5")


def test_build_generator_names_the_weights_that_do_not_fit(tiny64):
    folder, _, _ = tiny64
    config, state_dict = load_checkpoint(folder / "weights.npz")
    state_dict.pop("mapping.w_avg")
    with pytest.raises(ModelError, match="missing mapping.w_avg"):
        build_generator(config, state_dict)
    with pytest.raises(ModelError, match="wrong shape"):
        build_generator({**config, "w_dim": 64}, load_checkpoint(folder / "weights.npz")[1])


def test_tensorflow_era_pickle_is_converted_to_the_official_image(tmp_path, tiny64):
    folder, weights, config = tiny64
    marker = tmp_path / "pwned"
    path = tmp_path / "stylegan2-car-config-f.pkl"
    source = f"open({str(marker)!r}, 'w').write('executed')\n"
    nv.write_pickle(path, nv.tf_era_networks(weights, config, module_src=source))

    loaded_config, state_dict = load_checkpoint(path)

    assert not marker.exists()
    assert loaded_config == {**EXPECTED_CONFIG, "num_fp16_res": 0, "conv_clamp": None}
    assert_same_weights(state_dict, weights)  # G holds zeros: Gs was read
    reference = np.load(folder / "reference.npz")
    generator = build_generator(loaded_config, state_dict)
    with torch.no_grad():
        ws = generator.mapping(torch.from_numpy(reference["z"][0:1]), None, truncation_psi=0.7)
        image = generator.synthesis(ws, noise_mode="const").numpy()
    expected = reference["img_psi07"][0:1]
    assert np.linalg.norm(image - expected) / np.linalg.norm(expected) < 1e-5


def test_tensorflow_era_variants_we_cannot_run_are_named(tmp_path, tiny64):
    _, weights, config = tiny64
    networks = nv.tf_era_networks(weights, config)
    networks[2]._state["static_kwargs"]["architecture"] = "resnet"
    path = tmp_path / "resnet.pkl"
    nv.write_pickle(path, networks)
    with pytest.raises(ModelError, match="architecture='resnet' is not supported"):
        load_checkpoint(path)

    networks = nv.tf_era_networks(weights, config)
    networks[2]._state["version"] = 3
    nv.write_pickle(path, networks)
    with pytest.raises(ModelError, match="pickle version 3 is too old"):
        load_checkpoint(path)

    networks = nv.tf_era_networks(weights, config)
    synthesis = networks[2]._state["components"]["synthesis"]._state
    synthesis["variables"] = [(k, v) for k, v in synthesis["variables"] if k != "8x8/Conv1/bias"]
    nv.write_pickle(path, networks)
    with pytest.raises(
        ModelError, match="TF-era generator lacks variable synthesis/8x8/Conv1/bias"
    ):
        load_checkpoint(path)


def test_plain_torch_submodules_inside_a_network_are_read_not_run(tmp_path, tiny64):
    _, weights, config = tiny64
    generator = nv.generator_object(weights, config)
    mapping = generator.meta["state"]["_modules"]["mapping"].meta["state"]
    linear = torch.nn.Linear(64, 128)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weights["mapping.fc0.weight"]))
        linear.bias.copy_(torch.from_numpy(weights["mapping.fc0.bias"]))
    mapping["_modules"]["fc0"] = linear
    path = tmp_path / "mixed.pkl"
    nv.write_pickle(path, {"G_ema": generator})

    assert "torch.nn.modules.linear.Linear" in nv.pickle_globals(path)
    _, state_dict = load_checkpoint(path)
    assert_same_weights(state_dict, weights)


def test_tensor_reaching_past_its_stored_data_is_corrupt(tmp_path):
    storage = torch.arange(4, dtype=torch.float32).storage()
    oversized = nv.Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (10**6,), (1,), False, None)
    path = tmp_path / "oversized.pkl"
    nv.write_pickle(path, {"G_ema": oversized})
    with pytest.raises(ModelError, match="reaches past its stored data"):
        load_checkpoint(path)


def test_network_with_a_malformed_module_state_is_an_unknown_layout(tmp_path, tiny64):
    _, weights, config = tiny64
    generator = nv.generator_object(weights, config)
    generator.meta["state"]["_modules"]["mapping"].meta["state"]["_parameters"] = ["not", "a dict"]
    path = tmp_path / "odd.pkl"
    nv.write_pickle(path, {"G_ema": generator})
    with pytest.raises(ModelError, match="odd.pkl: unknown network layout inside the file"):
        load_checkpoint(path)
