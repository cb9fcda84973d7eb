"""napari-freedrag: point-based generative image editing (FreeDrag) inside napari.

The public API is imported lazily so that ``import napari_freedrag`` stays cheap and
never imports Qt or napari.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-freedrag")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

_LAZY = {
    "load_generator": "napari_freedrag.models.registry",
    "known_models": "napari_freedrag.models.registry",
    "drag_steps": "napari_freedrag.engine.run",
    "drag": "napari_freedrag.engine.run",
    "DragRun": "napari_freedrag.engine.run",
    "TargetSource": "napari_freedrag.engine.targets",
    "Step": "napari_freedrag.engine.run",
    "DragResult": "napari_freedrag.engine.run",
    "StartState": "napari_freedrag.engine.protocol",
    "napari_drag": "napari_freedrag.napari.api",
    "batch": "napari_freedrag.batching",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_freedrag' has no attribute {name!r}")
