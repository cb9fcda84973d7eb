"""NVIDIA's discriminator read from a training snapshot, and projection through its features.

NVIDIA publishes no reference outputs for D, so the numbers below are our own: a tiny D
with seeded weights, written as a snapshot pickle, read back without running code, and
compared with the module it came from and with values fixed when this test was written.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_freedrag as nfd
from napari_freedrag.errors import ModelError
from napari_freedrag.models.stylegan2.discriminator import Discriminator, load_discriminator
from napari_freedrag.models.stylegan2.network import Generator
from napari_freedrag.testing import TINY, save_random_checkpoint

from . import nvidia_pickles as nv

D_KWARGS = {
    "c_dim": 0, "img_resolution": 32, "img_channels": 3, "architecture": "resnet",
    "channel_base": 256, "channel_max": 16, "num_fp16_res": 0, "conv_clamp": 256,
    "block_kwargs": {}, "mapping_kwargs": {},
    "epilogue_kwargs": {"mbstd_group_size": 4},
}  # fmt: skip
#: Sum of every block's activations and the logit for ``_probe()``, recorded once.
EXPECTED_FEATURE_SUMS = (282.06482, 63.077679, 11.485315)
EXPECTED_LOGIT = -0.11978911


def _probe() -> torch.Tensor:
    rows = torch.linspace(-1, 1, 32)
    image = torch.stack([rows[:, None] * rows[None, :], rows[:, None].expand(32, 32),
                         torch.sin(6 * rows)[None, :].expand(32, 32)])  # fmt: skip
    return image[None]


def _tiny_d() -> Discriminator:
    torch.manual_seed(1)
    discriminator = Discriminator(**D_KWARGS)
    with torch.no_grad():
        for name, parameter in discriminator.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0, 0.1)
    return discriminator.eval()


def _record(name: str, node: dict) -> nv.PersistentObject:
    tensors = {k: v for k, v in node.items() if isinstance(v, torch.Tensor)}
    children = {k: _record(k, v) for k, v in node.items() if isinstance(v, dict)}
    state = nv.module_state(
        parameters={k: v for k, v in tensors.items() if k != "resample_filter"},
        buffers={k: v for k, v in tensors.items() if k == "resample_filter"},
        modules=children,
    )
    return nv.persistent(name, state)


def _module_tree(state_dict) -> dict:
    root: dict = {}
    for name, value in state_dict.items():
        node = root
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value.detach().clone()
    return root


def _snapshot(path, discriminator: Discriminator | None) -> None:
    torch.manual_seed(0)
    generator = Generator(**TINY)
    weights = {k: v.numpy() for k, v in generator.state_dict().items()}
    data = {"G_ema": nv.generator_object(weights, {"init_kwargs": _g_kwargs()})}
    if discriminator is not None:
        record = _record("Discriminator", _module_tree(discriminator.state_dict()))
        record.meta["state"]["_init_kwargs"] = nv.EasyDict(D_KWARGS)
        data["D"] = record
    nv.write_pickle(path, data)


def _g_kwargs() -> dict:
    synthesis = {k: TINY[k] for k in ("channel_base", "channel_max")}
    return {**{k: v for k, v in TINY.items() if k not in synthesis},
            "synthesis_kwargs": synthesis}  # fmt: skip


@pytest.fixture(scope="module")
def snapshot_with_d(tmp_path_factory):
    path = tmp_path_factory.mktemp("snap") / "network-snapshot-000100.pkl"
    _snapshot(path, _tiny_d())
    return path


def test_d_loads_from_the_snapshot_and_computes_what_it_was_saved_from(snapshot_with_d):
    loaded = load_discriminator(snapshot_with_d)
    original = _tiny_d()
    features = loaded.features(_probe())
    assert [tuple(f.shape) for f in features] == [(1, 16, 16, 16), (1, 16, 8, 8), (1, 16, 4, 4)]
    for ours, theirs in zip(features, original.features(_probe()), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    again = loaded.features(_probe())
    assert all(torch.equal(a, b) for a, b in zip(features, again, strict=True))
    sums = tuple(float(f.sum()) for f in features)
    logit = float(loaded(_probe()))
    assert sums == pytest.approx(EXPECTED_FEATURE_SUMS, rel=1e-5)
    assert logit == pytest.approx(EXPECTED_LOGIT, rel=1e-5)


def test_files_without_d_give_none(tmp_path):
    without = tmp_path / "network-snapshot-g-only.pkl"
    _snapshot(without, None)
    assert load_discriminator(without) is None
    assert load_discriminator(save_random_checkpoint(tmp_path)) is None
    assert load_discriminator(None) is None


def test_d_that_does_not_fit_its_config_is_refused(tmp_path):
    path = tmp_path / "broken.pkl"
    nv.write_pickle(path, nv.snapshot(
        {k: v.numpy() for k, v in Generator(**TINY).state_dict().items()},
        {"init_kwargs": _g_kwargs(), "img_resolution": 32},
    ))  # fmt: skip
    with pytest.raises(ModelError, match="discriminator"):
        load_discriminator(path)


def test_projection_uses_d_features_when_the_snapshot_has_d(snapshot_with_d):
    gen = nfd.load_generator(str(snapshot_with_d), device="cpu")
    source = gen.sample(2).image
    state = gen.invert(source, mode="w", steps=40)
    record = state.info["projection"]
    assert record["perceptual"] == "discriminator"
    assert record["psnr"] > 22 and np.isfinite(record["final_losses"]["perceptual"])
    ssim_only = gen.invert(source, mode="w", steps=3, perceptual="ssim")
    assert ssim_only.info["projection"]["perceptual"] == "ssim"
