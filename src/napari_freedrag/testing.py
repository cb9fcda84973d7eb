"""Random-weight StyleGAN2 generators for tests, benchmarks and the demo's fallback.

The one place they are built, so that "tiny" means one thing across the test suite, the
speed benchmark (which also builds full-size FFHQ-style configurations here) and the demo
when the bundled weights are missing. Each is seeded: the same arguments give the same
weights, hence the same images and drag trajectories.
"""

from __future__ import annotations

from pathlib import Path

#: A 32 px generator of about 0.1 s a FreeDrag step on one CPU thread (NVIDIA's kwargs).
TINY = {
    "z_dim": 16,
    "c_dim": 0,
    "w_dim": 16,
    "img_resolution": 32,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 256,
    "channel_max": 16,
}

#: The published FFHQ-style StyleGAN2 configuration, at a resolution given separately.
STANDARD = {
    "z_dim": 512,
    "w_dim": 512,
    "mapping_layers": 8,
    "channel_base": 32768,
    "channel_max": 512,
    "num_fp16_res": 4,
    "conv_clamp": 256,
}


def generator_config(
    resolution: int,
    *,
    z_dim: int,
    w_dim: int,
    mapping_layers: int,
    channel_base: int,
    channel_max: int,
    img_channels: int = 3,
    num_fp16_res: int = 0,
    conv_clamp: float | None = None,
) -> dict:
    """NVIDIA's ``Generator`` kwargs from the flat description benchmarks record."""
    return {
        "z_dim": z_dim,
        "c_dim": 0,
        "w_dim": w_dim,
        "img_resolution": resolution,
        "img_channels": img_channels,
        "mapping_kwargs": {"num_layers": mapping_layers},
        "channel_base": channel_base,
        "channel_max": channel_max,
        "num_fp16_res": num_fp16_res,
        "conv_clamp": conv_clamp,
    }


def random_generator(config: dict | None = None, *, seed: int = 0, perturb: float = 0.0):
    """A seeded random generator of ``config`` (default :data:`TINY`), in eval mode.

    Freshly initialised biases and noise strengths are zero, which hides bugs in code that
    must carry them; ``perturb`` > 0 draws them from N(0, perturb) and ``w_avg`` from
    N(0, 1), as after training.
    """
    import torch

    from napari_freedrag.models.stylegan2.network import Generator

    torch.manual_seed(seed)
    generator = Generator(**(TINY if config is None else config))
    if perturb:
        with torch.no_grad():
            for name, tensor in generator.named_parameters():
                if name.endswith("bias") or name.endswith("noise_strength"):
                    tensor.normal_(0, perturb)
            generator.mapping.w_avg.normal_()
    return generator.eval()


def random_backend(
    config: dict | None = None,
    name: str = "random",
    device: str = "cpu",
    *,
    seed: int = 0,
    perturb: float = 0.0,
):
    """:func:`random_generator` behind the StyleGAN2 backend the engine drags with."""
    from napari_freedrag.models.stylegan2.backend import StyleGAN2Backend

    return StyleGAN2Backend(random_generator(config, seed=seed, perturb=perturb), name, device)


def save_random_checkpoint(folder: Path, name: str = "tiny", config: dict | None = None) -> Path:
    """Write ``folder/name.safetensors`` (+ ``.json``) of a random generator; returns the path."""
    from napari_freedrag.models.stylegan2.checkpoint import save_checkpoint

    config = TINY if config is None else config
    return save_checkpoint(Path(folder) / name, config, random_generator(config).state_dict())


class BackendWrapper:
    """A backend that passes every call on to ``inner``; subclasses replace what they vary
    (a session that crashes, features computed another way)."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.kind, self.device = inner.name, inner.kind, inner.device

    def preset(self, method, image_size):
        return self.inner.preset(method, image_size)

    def sample(self, seed, truncation=0.7):
        return self.inner.sample(seed, truncation)

    def session(self, start, mask, method):
        return self.inner.session(start, mask, method)
