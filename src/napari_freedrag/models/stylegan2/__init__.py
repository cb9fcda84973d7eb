"""StyleGAN2: our own generator (NVIDIA's weights and numerics), safe checkpoints, drag backend."""

from .backend import StyleGAN2Backend
from .network import Generator

__all__ = ["Generator", "StyleGAN2Backend"]
