"""A tiny random-weight StyleGAN2 checkpoint file for command-line tests (about 0.1 s a step)."""

from __future__ import annotations

from pathlib import Path

TINY_CONFIG = {
    "z_dim": 16,
    "c_dim": 0,
    "w_dim": 16,
    "img_resolution": 32,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 256,
    "channel_max": 16,
}


def save_tiny_stylegan2(folder: Path, name: str = "tiny") -> Path:
    """Write ``folder/name.safetensors`` (+ ``.json``) and return the ``.safetensors`` path."""
    import torch

    from napari_freedrag.models.stylegan2.checkpoint import save_checkpoint
    from napari_freedrag.models.stylegan2.network import Generator

    torch.manual_seed(0)
    generator = Generator(**TINY_CONFIG)
    return save_checkpoint(folder / name, TINY_CONFIG, generator.state_dict())
