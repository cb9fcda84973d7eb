"""Real-image editing with Stable Diffusion 1.x (diffusers + peft), fully offline.

Imported lazily: diffusers and transformers take seconds to import and are an optional
extra (``pip install napari-freedrag[ldm]``).
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["LDMBackend", "load_ldm"]
_HOMES = {"LDMBackend": "backend", "load_ldm": "loading"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(f"napari_freedrag.models.ldm.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'napari_freedrag.models.ldm' has no attribute {name!r}")
