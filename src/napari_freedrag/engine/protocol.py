"""The contract between the drag engine and the generative models it drives.

The engine (FreeDrag, DragGAN) only ever talks to a :class:`Backend` and the
:class:`DragSession` it opens for one edit.  It never learns whether the model is a
StyleGAN2, a latent diffusion model or an analytic test renderer.

Coordinates: every point is ``(row, col)`` in *image pixels* of the image that
``DragSession.render`` returns (floats allowed).  ``DragSession.feature_scale`` maps
image pixels to feature-map pixels per axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

METHODS = ("freedrag", "draggan")


@dataclass
class StartState:
    """A state an edit starts from (or ends in): enough for the backend to rebuild the image.

    ``latent`` is backend-specific (StyleGAN2: the W+ tensor ``(1, num_ws, w_dim)``;
    latent diffusion: the inverted ``z_t``).  ``info`` is plain-JSON provenance (model,
    seed, truncation, source image, prompt, parent edit ...) that ends up in reports and
    layer metadata.  ``extra`` is the backend's own record of what must travel with the
    state but is not provenance (latent diffusion: a typed ``ldm.session.LDMStart``;
    StyleGAN2: a dict, empty unless the state was projected).
    """

    latent: torch.Tensor
    image_size: tuple[int, int]
    image: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    extra: Any = field(default_factory=dict)


@runtime_checkable
class DragSession(Protocol):
    """One edit on one start state, opened by :meth:`Backend.session`.

    The session owns whatever caches make the edit fast (frozen layers, the initial
    feature map for the mask term, the original latent for mutual self-attention).
    """

    #: Leaf tensor the engine optimises (``requires_grad=True``), a copy of the trainable
    #: part of the start latent.
    latent: torch.Tensor
    #: ``(H, W)`` of the image the points live in.
    image_size: tuple[int, int]
    #: ``(h / H, w / W)``: feature-map pixels per image pixel, per axis.
    feature_scale: tuple[float, float]

    def features(
        self, latent: torch.Tensor, boxes: list[tuple[int, int, int, int]] | None = None
    ) -> torch.Tensor:
        """The ``(C, h, w)`` feature map, differentiable w.r.t. ``latent``.

        ``boxes`` (feature pixels, ``(r0, c0, r1, c1)``, end-exclusive) are the only
        places the caller will read; a backend may use them to compute less, but values
        inside them must be those of the full map (to float rounding).  ``None`` means the
        full map.
        """
        ...

    def mask_term(self, latent: torch.Tensor, features: torch.Tensor) -> torch.Tensor | None:
        """The unweighted region-preservation term, or ``None`` when no mask was painted."""
        ...

    def render(self, latent: torch.Tensor) -> np.ndarray:
        """The full ``(H, W, 3)`` uint8 image for ``latent`` (previews and results only)."""
        ...

    def finish(self, latent: torch.Tensor) -> StartState:
        """The state after the edit, to show, save or continue dragging from.

        Its ``image`` may be left ``None``: the engine then fills it from :meth:`render`.
        """
        ...


@runtime_checkable
class Backend(Protocol):
    """A generative model the engine can drag in."""

    #: Display name, e.g. ``"cells"`` or ``"stylegan2-ffhq-512x512.pkl"``.
    name: str
    #: ``"stylegan2"``, ``"ldm"`` or ``"analytic"``; shown in reports, never read by the engine.
    kind: str
    device: torch.device

    def preset(self, method: str, image_size: tuple[int, int]) -> Any:
        """This model's :class:`~napari_freedrag.engine.presets.FreeDragParams` or
        :class:`~napari_freedrag.engine.presets.DragGANParams` (the backend owns its values;
        a run asks once)."""
        ...

    def sample(self, seed: int, truncation: float = 0.7) -> StartState:
        """A starting state from a seed (models that can sample)."""
        ...

    def session(self, start: StartState, mask: np.ndarray | None, method: str) -> DragSession:
        """Open an edit on ``start``.  ``mask`` is ``(H, W)``, nonzero = may change."""
        ...
