"""The Stable Diffusion backend on a tiny random-weight SD-1.x pipeline, loaded like a user's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from napari_freedrag import imaging  # noqa: E402
from napari_freedrag._tests.ldm_tiny import TINY_NATIVE_SIZE  # noqa: E402
from napari_freedrag.errors import InputError, ModelError  # noqa: E402
from napari_freedrag.models.ldm import lora  # noqa: E402
from napari_freedrag.models.ldm.loading import load_ldm  # noqa: E402
from napari_freedrag.models.ldm.session import FEATURE_BLOCK  # noqa: E402

H, W = 40, 56  # the user's image: not the working size, not square


@pytest.fixture(scope="module")
def gen(tiny_ldm_folder):
    return load_ldm(f"ldm:{tiny_ldm_folder}", "cpu", num_inference_steps=10)


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """LoRA caches go to a fresh folder per test, never to the user's home."""
    monkeypatch.setenv("NAPARI_FREEDRAG_HOME", str(tmp_path / "home"))


def _cell_image(dtype=np.uint16) -> np.ndarray:
    rows, cols = np.mgrid[:H, :W]
    blob = np.exp(-((rows - 20) ** 2 + (cols - 20) ** 2) / 60.0)
    return (200 + 3000 * blob).astype(dtype)


# --- loading -----------------------------------------------------------------------------


def test_loads_a_diffusers_folder_with_sd15_geometry(gen):
    assert gen.kind == "ldm" and gen.native_size == TINY_NATIVE_SIZE
    assert len(gen.unet.down_blocks) == 4 and len(gen.unet.up_blocks) == 4
    # 10 DDIM steps (901, 801, ..., 1) at strength 0.7: 7 inverted, z_t at the 4th
    assert gen.schedule.num_inverted == 7 and gen.schedule.start_timestep == 601


def test_spec_timestep_is_681_with_sd15_scheduler_values(gen):
    from diffusers import DDIMScheduler

    from napari_freedrag.models.ldm.inversion import DDIMSchedule

    scheduler = DDIMScheduler.from_config(gen.schedule.scheduler.config)
    schedule = DDIMSchedule(scheduler, 50, 0.7)
    assert (schedule.num_inverted, schedule.start_timestep) == (35, 681)


def test_missing_folder_says_what_and_how_to_get_one(tmp_path):
    with pytest.raises(ModelError, match="does not exist.*hf download"):
        load_ldm(f"ldm:{tmp_path / 'nowhere' / 'sd15'}", "cpu")


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors"),
        ("tokenizer", "tokenizer/"),
        ("scheduler/scheduler_config.json", "scheduler/scheduler_config.json"),
    ],
)
def test_incomplete_folder_names_the_missing_component(tiny_ldm_folder, tmp_path, remove, named):
    broken = shutil.copytree(tiny_ldm_folder, tmp_path / "broken")
    target = broken / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelError, match=f"incomplete: missing {named}"):
        load_ldm(str(broken), "cpu")


def test_hf_ids_come_only_from_the_local_cache(tiny_ldm_folder, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(ModelError, match="no Hugging Face cache entry.*never downloads"):
        load_ldm("ldm:someone/tiny-sd", "cpu")

    repo = cache / "models--someone--tiny-sd"
    shutil.copytree(tiny_ldm_folder, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    loaded = load_ldm("ldm:someone/tiny-sd", "cpu", num_inference_steps=5)
    assert loaded.folder == repo / "snapshots" / ("a" * 40)


# --- inversion and image round trips -----------------------------------------------------


@pytest.mark.parametrize("kind", ["gray-uint16", "rgba-float"])
def test_invert_accepts_any_image_and_results_map_back(gen, kind):
    image = _cell_image()
    if kind == "rgba-float":
        image = np.stack([image / 4000.0] * 3 + [np.ones((H, W))], axis=-1).astype(np.float32)
    start = gen.invert(image)
    assert start.image_size == (H, W) and start.image.shape == (H, W, 3)
    assert start.info["working_size"] == [48, 64] and start.info["source"]["shape"] == list(
        image.shape
    )
    back = imaging.from_model_rgb(start.image, start.extra.source)
    assert back.shape == image.shape and back.dtype == image.dtype
    if kind == "rgba-float":
        np.testing.assert_array_equal(back[..., 3], 1.0)


def test_invert_reads_image_files_as_stored(gen, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "cells.tif", _cell_image())
    start = gen.invert(tmp_path / "cells.tif")
    assert start.info["source"]["dtype"] == "uint16" and start.image_size == (H, W)
    torch.testing.assert_close(start.latent, gen.invert(_cell_image()).latent)


def test_invert_refuses_stacks_and_negative_lora_steps(gen):
    with pytest.raises(InputError, match="2D slice"):
        gen.invert(np.zeros((3, H, W), np.uint16))
    with pytest.raises(InputError, match="lora_steps"):
        gen.invert(_cell_image(), lora_steps=-1)


# --- the drag session ---------------------------------------------------------------------


def test_features_are_the_decoder_block_at_half_working_size(gen):
    start = gen.invert(_cell_image())
    session = gen.session(start, None, "freedrag")
    features = session.features(session.latent)
    assert features.shape[1:] == (24, 32)  # working 48 x 64 -> half
    assert session.feature_scale == pytest.approx((24 / H, 32 / W))
    features.abs().mean().backward()
    assert session.latent.grad is not None and session.latent.grad.abs().sum() > 0

    # the early exit after up_blocks[2] must give exactly the full forward pass's values
    captured = {}
    hook = gen.unet.up_blocks[FEATURE_BLOCK].register_forward_hook(
        lambda module, args, out: captured.setdefault("f", out)
    )
    with torch.no_grad():
        gen.unet(start.latent, session.timestep, encoder_hidden_states=session.embeds)
    hook.remove()
    full = torch.nn.functional.interpolate(captured["f"], size=(24, 32), mode="bilinear")[0]
    torch.testing.assert_close(features.detach(), full)


def test_render_of_the_unedited_latent_is_the_reconstruction(gen):
    start = gen.invert(_cell_image())
    session = gen.session(start, None, "freedrag")
    image = session.render(session.latent)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - start.image).max() <= 2


def test_bad_masks_and_methods_are_refused(gen):
    start = gen.invert(_cell_image())
    with pytest.raises(InputError, match="does not match the image size"):
        gen.session(start, np.ones((10, 10)), "freedrag")
    with pytest.raises(InputError, match="unknown method"):
        gen.session(start, None, "magic")
    assert gen.session(start, np.zeros((H, W)), "freedrag").mask_term(None, None) is None


# --- per-image LoRA -------------------------------------------------------------------------


def test_lora_trains_once_and_is_reused_from_the_cache(tiny_ldm_folder, monkeypatch):
    image = _cell_image()
    first_gen = load_ldm(str(tiny_ldm_folder), "cpu", num_inference_steps=5)
    reported = []
    first = first_gen.invert(image, lora_steps=2, progress=lambda i, n: reported.append((i, n)))
    assert reported == [(1, 2), (2, 2)]
    info = first.info["lora"]
    assert info["cached"] is False and (info["steps"], info["rank"], info["lr"]) == (2, 16, 2e-4)
    cache_files = list(lora.lora_dir().glob("*.safetensors"))
    assert [p.name for p in cache_files] == [info["file"].rsplit("/", 1)[-1]]
    mtime = cache_files[0].stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the LoRA was trained again instead of loaded from the cache")

    monkeypatch.setattr(lora, "train_lora", no_training)
    second_gen = load_ldm(str(tiny_ldm_folder), "cpu", num_inference_steps=5)  # a new process, say
    second = second_gen.invert(image, lora_steps=2)
    assert second.info["lora"]["cached"] is True
    assert cache_files[0].stat().st_mtime_ns == mtime
    torch.testing.assert_close(second.latent, first.latent)  # the same LoRA, reloaded
    np.testing.assert_array_equal(second.image, first.image)

    # other settings are another LoRA; no LoRA restores the plain UNet
    plain = second_gen.invert(image)
    assert plain.info["lora"] is None and not torch.equal(plain.latent, first.latent)
    with pytest.raises(AssertionError, match="trained again"):
        second_gen.invert(image, lora_steps=3)


def test_a_seed_gives_a_generated_start_that_can_be_dragged(gen):
    start = gen.sample(seed=3)
    assert start.image.shape == (TINY_NATIVE_SIZE, TINY_NATIVE_SIZE, 3)
    assert start.info["seed"] == 3 and start.extra.source is None
    np.testing.assert_array_equal(gen.sample(seed=3).image, start.image)  # deterministic
    assert not np.array_equal(gen.sample(seed=4).image, start.image)
    session = gen.session(start, None, "freedrag")
    assert session.features(session.latent).shape[1:] == (32, 32)


def test_fp16_gradient_scaling_leaves_latent_gradients_unchanged(gen, monkeypatch):
    start = gen.invert(_cell_image())
    mask = np.zeros((H, W))
    mask[5:20, 5:30] = 1

    def latent_grad():
        session = gen.session(start, mask, "freedrag")
        features = session.features(session.latent)
        loss = features[:, 3:9, 4:12].abs().mean() + session.mask_term(session.latent, features)
        loss.backward()
        return session.latent.grad

    plain = latent_grad()
    monkeypatch.setattr(gen, "grad_scale", 2.0**12)  # what CUDA uses
    torch.testing.assert_close(latent_grad(), plain)


def test_stopping_lora_training_leaves_nothing_half_done(tiny_ldm_folder):
    fresh = load_ldm(str(tiny_ldm_folder), "cpu", num_inference_steps=5)

    class Stopped(Exception):
        pass

    def stop_after_first_step(step, total):
        raise Stopped

    with pytest.raises(Stopped):
        fresh.invert(_cell_image(), lora_steps=2, progress=stop_after_first_step)
    assert not list(lora.lora_dir().glob("*.safetensors"))  # nothing cached
    # the same request later trains from scratch and works
    assert fresh.invert(_cell_image(), lora_steps=2).info["lora"]["cached"] is False


def test_a_state_from_another_instance_reloads_its_lora_and_other_models_are_refused(
    gen, tiny_ldm_folder, tmp_path
):
    first = load_ldm(f"ldm:{tiny_ldm_folder}", "cpu", num_inference_steps=10)
    with_lora = first.invert(_cell_image(), lora_steps=1)
    expected = first.session(with_lora, None, "freedrag").render(with_lora.latent)
    # a kept state, opened on a fresh instance of the same model, gets its LoRA back
    again = gen.session(with_lora, None, "freedrag").render(with_lora.latent)
    np.testing.assert_array_equal(again, expected)

    other_model = load_ldm(str(shutil.copytree(tiny_ldm_folder, tmp_path / "other")), "cpu")
    with pytest.raises(ModelError, match="invert the image again"):
        other_model.session(with_lora, None, "freedrag")
    Path(with_lora.info["lora"]["file"]).unlink()
    with_lora.info["lora"]["adapter"] = "img_missing"
    with pytest.raises(ModelError, match="gone from the cache"):
        gen.session(with_lora, None, "freedrag")
