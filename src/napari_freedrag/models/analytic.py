"""A tiny differentiable renderer with known geometry: a fast, honest fake model for tests.

The image shows a few coloured Gaussian blobs.  Their centres are decoded from the latent
through a fixed linear map and a ``tanh`` (so moving one blob through the latent also
moves the others unless something holds them: that is what the mask term is for).
Features are fixed random 5x5 filters of the image, average-pooled to half size, like a
StyleGAN2 feature block at half the image resolution (``feature_scale = (0.5, 0.5)``).

It implements the full :class:`~napari_freedrag.engine.protocol.Backend` protocol, so
the engine, the widget, the CLI and the benchmarks can all be tested without a model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.presets import DragGANParams, FreeDragParams
from ..engine.protocol import StartState
from ..errors import InputError

PALETTE = (
    (0.95, 0.25, 0.2),
    (0.2, 0.85, 0.3),
    (0.25, 0.4, 1.0),
    (0.95, 0.85, 0.2),
    (0.8, 0.3, 0.9),
)
BACKGROUND = 0.1


class AnalyticBackend:
    """Gaussian blobs whose centres are a fixed function of a ``(1, latent_dim)`` latent.

    ``strict_boxes=True`` fills feature pixels outside the boxes the engine asks for with
    NaN, so any read the engine did not announce shows up as a diverged loss.
    """

    kind = "analytic"

    def __init__(
        self,
        size: int = 64,
        n_blobs: int = 3,
        latent_dim: int = 12,
        sigma: float = 4.0,
        device: str | torch.device = "cpu",
        strict_boxes: bool = False,
        name: str = "analytic",
    ):
        if latent_dim < 2 * n_blobs:
            raise ValueError("latent_dim must be at least 2 * n_blobs so every layout is reachable")
        self.name = name
        self.device = torch.device(device)
        self.size = int(size)
        self.n_blobs = int(n_blobs)
        self.latent_dim = int(latent_dim)
        self.sigma = float(sigma)
        self.strict_boxes = strict_boxes
        rng = torch.Generator().manual_seed(20230710)
        self.mix = (torch.randn(2 * n_blobs, latent_dim, generator=rng) / math.sqrt(latent_dim)).to(
            self.device
        )
        self.filters = (torch.randn(8, 3, 5, 5, generator=rng) * (4 / math.sqrt(75.0))).to(
            self.device
        )
        self.colours = torch.tensor(
            [PALETTE[i % len(PALETTE)] for i in range(n_blobs)], device=self.device
        )
        axis = torch.arange(self.size, dtype=torch.float32, device=self.device)
        self._rows, self._cols = torch.meshgrid(axis, axis, indexing="ij")
        self._spread = 0.5 * self.size

    # geometry ---------------------------------------------------------------------------
    def centres(self, latent: torch.Tensor) -> torch.Tensor:
        """Blob centres ``(n_blobs, 2)`` in image pixels ``(row, col)``."""
        code = self.mix @ latent.reshape(-1).to(self.mix)
        return (self.size - 1) / 2 + self._spread * torch.tanh(code).reshape(self.n_blobs, 2)

    def latent_for(self, centres) -> torch.Tensor:
        """The minimum-norm latent ``(1, latent_dim)`` that places the blobs at ``centres``."""
        target = torch.as_tensor(np.asarray(centres, dtype=np.float64)).reshape(-1)
        scaled = (target - (self.size - 1) / 2) / self._spread
        if bool((scaled.abs() >= 0.999).any()):
            raise ValueError(f"centres must lie well inside the {self.size}px image")
        code = torch.atanh(scaled)
        latent = torch.linalg.pinv(self.mix.double().cpu()) @ code
        return latent.float().reshape(1, -1).to(self.device)

    # rendering --------------------------------------------------------------------------
    def image(self, latent: torch.Tensor) -> torch.Tensor:
        """The float image ``(3, H, W)``, differentiable w.r.t. ``latent``."""
        centres = self.centres(latent)
        dr = self._rows[None] - centres[:, 0, None, None]
        dc = self._cols[None] - centres[:, 1, None, None]
        blobs = torch.exp(-(dr**2 + dc**2) / (2 * self.sigma**2))
        return BACKGROUND + torch.einsum("bc,bhw->chw", self.colours, blobs)

    def feature_map(self, latent: torch.Tensor) -> torch.Tensor:
        """Fixed filters of the image, pooled to half size: ``(8, H/2, W/2)``."""
        filtered = F.conv2d(self.image(latent)[None], self.filters, padding=2)
        return F.avg_pool2d(filtered, 2)[0]

    def render(self, latent: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            image = self.image(latent).clamp(0, 1) * 255
        return image.round().byte().permute(1, 2, 0).cpu().numpy()

    # Backend protocol -------------------------------------------------------------------
    def preset(self, method: str, image_size: tuple[int, int]):
        """Settings for blobs that move about 0.5 image px per Adam step: larger learning
        rates than StyleGAN2's, DragGAN's comparisons."""
        if method == "freedrag":
            return FreeDragParams(l=0.3, d=2.0, lr=0.01, max_steps=200)
        return DragGANParams(
            lr=0.005, motion_radius=2.0, track_radius=4.0, stop_distance=2.0, max_steps=200
        )

    def start(self, latent: torch.Tensor, info: dict | None = None) -> StartState:
        latent = latent.detach().to(self.device, torch.float32).reshape(1, self.latent_dim)
        return StartState(
            latent=latent.clone(),
            image_size=(self.size, self.size),
            image=self.render(latent),
            info={"model": self.name, **(info or {})},
        )

    def sample(self, seed: int, truncation: float = 0.7) -> StartState:
        z = np.random.RandomState(seed).randn(1, self.latent_dim) * truncation
        return self.start(
            torch.from_numpy(z).float(), {"seed": int(seed), "truncation": truncation}
        )

    def from_latent(self, latent) -> StartState:
        """A start from a saved ``(1, latent_dim)`` latent (e.g. ``result.state.latent``)."""
        array = np.asarray(latent, dtype=np.float32)
        if array.size != self.latent_dim or not np.isfinite(array).all():
            raise InputError(
                f"the analytic model needs a latent of {self.latent_dim} finite numbers, "
                f"got shape {array.shape}"
            )
        return self.start(torch.from_numpy(array), {"seed": None})

    def from_centres(self, centres) -> StartState:
        """A start whose blobs sit exactly at ``centres`` (tests pick clean layouts)."""
        return self.start(self.latent_for(centres), {"seed": None})

    def session(self, start: StartState, mask: np.ndarray | None, method: str) -> AnalyticSession:
        return AnalyticSession(self, start, mask, method)


class AnalyticSession:
    """One edit: the latent being optimised, the initial features for the mask term."""

    def __init__(self, backend: AnalyticBackend, start: StartState, mask, method: str):
        self.backend = backend
        self.start = start
        self.image_size = (backend.size, backend.size)
        self.feature_scale = (0.5, 0.5)
        self.latent = start.latent.detach().clone().to(backend.device).requires_grad_(True)
        self.method = method
        self.keep = None
        if mask is not None and np.asarray(mask).any():
            with torch.no_grad():
                self.initial = backend.feature_map(self.latent)
            editable = torch.as_tensor(np.asarray(mask, dtype=np.float32), device=backend.device)
            resized = F.interpolate(
                editable[None, None], size=self.initial.shape[-2:], mode="bilinear",
                align_corners=False,
            )[0, 0]  # fmt: skip
            keep = resized <= 0
            self.keep = keep if bool(keep.any()) else None  # nothing left to preserve

    def features(self, latent: torch.Tensor, boxes=None) -> torch.Tensor:
        features = self.backend.feature_map(latent)
        if boxes is None or not self.backend.strict_boxes:
            return features
        read = torch.zeros(features.shape[-2:], dtype=torch.bool, device=features.device)
        for r0, c0, r1, c1 in boxes:
            read[r0:r1, c0:c1] = True
        return torch.where(read, features, torch.full_like(features, float("nan")))

    def mask_term(self, latent: torch.Tensor, features: torch.Tensor) -> torch.Tensor | None:
        """Feature change outside the mask: mean over kept entries (FreeDrag) or over all
        entries with the editable ones zeroed (DragGAN), as the StyleGAN2 backend does."""
        if self.keep is None:
            return None
        change = (features - self.initial).abs()
        if self.method == "draggan":
            return (change * self.keep).mean()
        return change[:, self.keep].mean()

    def render(self, latent: torch.Tensor) -> np.ndarray:
        return self.backend.render(latent)

    def finish(self, latent: torch.Tensor) -> StartState:
        return self.backend.start(
            latent, {k: v for k, v in self.start.info.items() if k != "model"}
        )

    def centres(self, latent: torch.Tensor | None = None) -> np.ndarray:
        """Where the blobs are now, ``(n_blobs, 2)`` image pixels."""
        with torch.no_grad():
            return self.backend.centres(self.latent if latent is None else latent).cpu().numpy()
