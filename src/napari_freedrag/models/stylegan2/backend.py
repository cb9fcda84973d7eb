"""StyleGAN2 as a drag backend: W+ latents, feature-block features, partial synthesis.

Speed comes from three exact shortcuts (none changes a computed number):

* only the blocks up to the feature block run while optimising; the rest run only to
  render previews and the result;
* the W+ vectors after the first ``TRAINABLE_WS`` are frozen, so the layers that read
  them get their demodulated weights once per session, outside autograd: their backward
  computes input gradients only, never weight gradients;
* when the caller says where it will read (``boxes``) and no mask term needs the whole
  map, the high-resolution layers compute only the receptive field of those boxes.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_freedrag.engine.protocol import METHODS, StartState
from napari_freedrag.engine.validate import check_mask_shape
from napari_freedrag.errors import InputError, ModelError
from napari_freedrag.models.stylegan2.network import Generator, to_uint8_image
from napari_freedrag.models.stylegan2.partial import FeaturePath, Rect, clip_rect, run_blocks

#: W+ vectors the drag optimises (FreeDrag and DragGAN both use the first 6).
TRAINABLE_WS = 6
#: Feature block for 256 px and larger models (smaller ones use half the image size).
FEATURE_RES = 128
#: Boxes closer than this (feature px) are computed as one region: their receptive fields
#: overlap so much that separate regions would compute the overlap twice.
MERGE_MARGIN = 4
#: Regions covering more than this fraction of the map are computed as the full map.
FULL_MAP_FRACTION = 0.6
#: Precisions the synthesis can run in (autocast: weights, latents and results stay float32).
#: No float16: the mask term's per-element gradients (~1e-7) would underflow in it.
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


def feature_resolution(img_resolution: int) -> int:
    """The synthesis block whose raw output serves as the drag features (docs/algorithm.md §6)."""
    if img_resolution >= 2 * FEATURE_RES:
        return FEATURE_RES
    return max(img_resolution // 2, 4)


class StyleGAN2Backend:
    """A StyleGAN2 generator the drag engine can sample from and edit."""

    kind = "stylegan2"

    def __init__(
        self,
        generator: Generator,
        name: str,
        device: torch.device | str = "cpu",
        category: str | None = None,
        checkpoint: str | Path | None = None,
        precision: str = "float32",
    ):
        if precision not in PRECISIONS:
            raise InputError(
                f"precision must be one of {', '.join(PRECISIONS)} (bfloat16 for a faster GPU "
                f"run), got {precision!r}"
            )
        if generator.img_channels not in (1, 3):
            raise ModelError(
                f"{name}: {generator.img_channels}-channel StyleGAN2 models are not supported "
                "(only grayscale or RGB)"
            )
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self.name = name
        self.category = category
        resolution = generator.img_resolution
        self.image_size = (resolution, resolution)
        self.feature_res = feature_resolution(resolution)
        self.precision = precision
        #: The file the generator came from: projection reads its discriminator, if any.
        self.checkpoint = checkpoint
        self._discriminator: Any = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The synthesis' convolutions and matrix products in ``precision`` (float32: as is)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (1, self.generator.num_ws, self.generator.w_dim)

    def preset(self, method: str, image_size: tuple[int, int] | None = None) -> Any:
        """FreeDrag's and DragGAN's published StyleGAN2 settings (docs/algorithm.md §6, §7)."""
        from napari_freedrag.engine.presets import DragGANParams, FreeDragParams
        from napari_freedrag.models.stylegan2.categories import freedrag_patch_steps

        height = int((image_size or self.image_size)[0])
        if method == "freedrag":
            l, d = freedrag_patch_steps(self.category)  # noqa: E741
            return FreeDragParams(l=l, d=d, lr=0.002)
        return DragGANParams(
            lr=0.001,
            motion_radius=float(round(3 * height / 512)),
            track_radius=float(round(12 * height / 512)),
            stop_distance=max(2.0, 2 * height / 512),
        )

    def sample(self, seed: int, truncation: float = 0.7) -> StartState:
        """The image of ``seed`` as other StyleGAN2 tools show it (legacy NumPy RandomState)."""
        if (
            isinstance(seed, bool)
            or not isinstance(seed, (int, np.integer))
            or not (0 <= seed < 2**32)
        ):
            raise InputError(f"seed must be an integer in [0, 2**32 - 1], got {seed!r}")
        if (
            isinstance(truncation, bool)
            or not isinstance(truncation, (int, float))
            or not (math.isfinite(truncation))
        ):
            raise InputError(
                f"truncation must be a finite number (usually 0.5-1), got {truncation!r}"
            )
        generator = self.generator
        z = torch.from_numpy(np.random.RandomState(int(seed)).randn(1, generator.z_dim))
        # Conditional models get the all-zero label, i.e. no class preference.
        c = torch.zeros(1, generator.c_dim, device=self.device) if generator.c_dim else None
        with torch.no_grad():
            ws = generator.mapping(z.to(self.device), c, truncation_psi=float(truncation))
        info = {"model": self.name, "kind": self.kind, "seed": int(seed),
                "truncation": float(truncation)}  # fmt: skip
        return self._state(ws, info)

    def from_latent(self, w_plus: np.ndarray | torch.Tensor) -> StartState:
        """A start state from a saved W+ latent ``(num_ws, w_dim)`` or ``(1, num_ws, w_dim)``."""
        return self._state(self._check_latent(w_plus), {"model": self.name, "kind": self.kind,
                                                        "source": "latent"})  # fmt: skip

    def render(self, ws: torch.Tensor, generator: Generator | None = None) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 image of a full W+ latent (``generator``: a projected copy);
        no gradient, channels-last."""
        return self.render_with_features(ws, generator)[0]

    def render_with_features(
        self, ws: torch.Tensor, generator: Generator | None = None
    ) -> tuple[np.ndarray, torch.Tensor]:
        """:meth:`render`'s image and the feature block's raw ``(C, h, w)`` output it
        passed through (the drag features of ``ws``, to float rounding)."""
        synthesis = (generator or self.generator).synthesis
        with torch.no_grad(), self.autocast():
            ws = ws.to(self.device, torch.float32)
            x, img = run_blocks(synthesis, ws, until=self.feature_res, channels_last=True)
            features = x[0].float().contiguous()
            img = run_blocks(synthesis, ws, after=self.feature_res, x=x, img=img,
                             channels_last=True)[1]  # fmt: skip
        return to_uint8_image(img.float()), features

    def invert_steps(self, image, *, value_range=None, stop=None, **settings):
        """Project a real image (see :mod:`.projection`): steps, then a start state."""
        from napari_freedrag.models.stylegan2 import projection

        options = projection.ProjectionSettings(**settings)
        return projection.invert_steps(self, image, options, value_range, stop)

    def invert(self, image, prompt: str = "", lora_steps: int = 0, *, progress=None, **kwargs):
        """Project a real image and return the start state; ``progress(step, total)``
        follows it. ``prompt`` means nothing to a StyleGAN2 and is ignored."""
        if lora_steps:
            raise InputError("per-image LoRA is for ldm: models; StyleGAN2 uses mode='pti'")
        steps = self.invert_steps(image, **kwargs)
        while True:
            try:
                step = next(steps)
            except StopIteration as end:
                return end.value
            if progress is not None:
                progress(step.index, step.total)

    def discriminator(self):
        """The checkpoint's D (loaded once), or ``None`` when the file carries none."""
        if self._discriminator is None:
            from napari_freedrag.models.stylegan2.discriminator import load_discriminator

            found = load_discriminator(self.checkpoint)
            self._discriminator = False if found is None else found.to(self.device)
        return self._discriminator or None

    def session(self, start: StartState, mask: np.ndarray | None, method: str) -> StyleGAN2Session:
        if method not in METHODS:
            raise InputError(f"unknown method {method!r}; choose 'freedrag' or 'draggan'")
        return StyleGAN2Session(self, self._check_latent(start.latent), start, mask)

    def _state(self, ws: torch.Tensor, info: dict[str, Any]) -> StartState:
        return StartState(latent=ws, image_size=self.image_size, image=self.render(ws), info=info)

    def _check_latent(self, w_plus: np.ndarray | torch.Tensor) -> torch.Tensor:
        expected = self.latent_shape
        if isinstance(w_plus, np.ndarray):
            w_plus = torch.from_numpy(np.asarray(w_plus, dtype=np.float32))
        if not isinstance(w_plus, torch.Tensor):
            raise InputError(
                f"a W+ latent must be an array of shape {expected}, got {type(w_plus)}"
            )
        ws = w_plus.detach().to(self.device, torch.float32)
        if ws.ndim == 2:
            ws = ws.unsqueeze(0)
        if tuple(ws.shape) != expected:
            raise InputError(
                f"this model's W+ latent has shape {expected} (or {expected[1:]}), got "
                f"{tuple(w_plus.shape)}: was it saved from another model?"
            )
        if not torch.isfinite(ws).all():
            raise InputError("the W+ latent contains NaN or inf values")
        return ws.clone()


class StyleGAN2Session:
    """One edit: the trainable first W+ vectors, cached frozen layers, the mask term."""

    def __init__(self, backend: StyleGAN2Backend, ws: torch.Tensor, start: StartState, mask):
        self.backend = backend
        # A projected image renders with its own generator copy (noise maps, PTI weights).
        self._generator = start.extra.get("generator")
        self._synthesis = (self._generator or backend.generator).synthesis
        self._parent_info = start.info
        self._carried = {k: v for k, v in start.extra.items() if k in ("generator", "source")}
        n_trainable = min(TRAINABLE_WS, ws.shape[1])
        self.latent = ws[:, :n_trainable].clone().requires_grad_(True)
        self._frozen_ws = ws[:, n_trainable:]
        self.image_size = backend.image_size
        res = backend.feature_res
        self.feature_scale = (res / self.image_size[0], res / self.image_size[1])
        self._feature_res = res
        self._path = FeaturePath(self._synthesis, ws, n_trainable, res)
        self._outside = self._outside_mask(mask)
        self._initial_features = None
        self._start_latent = self.latent.detach().clone()
        self._rendered: tuple[torch.Tensor, torch.Tensor | None] = (self._start_latent, None)
        if self._outside is not None:
            with torch.no_grad():
                self._initial_features = self.features(self.latent)

    # DragSession protocol -------------------------------------------------------------

    def features(
        self, latent: torch.Tensor, boxes: list[tuple[int, int, int, int]] | None = None
    ) -> torch.Tensor:
        """The raw ``(C, h, w)`` output of the feature block; exact inside ``boxes``."""
        recorded = torch.is_grad_enabled() and latent.requires_grad
        known = None if recorded else self._known_map(latent)
        if known is not None:  # the start's (mask term) or the last render's map
            return known
        regions = None
        if boxes is not None and (self._outside is None or not recorded):
            regions = self._regions(boxes)  # a mask term's map is whole; a read is not
        with self.backend.autocast():
            tiles = self._path(latent, [None] if regions is None else regions)
        tiles = [tile.float() for tile in tiles]
        if regions is None:
            return tiles[0][0]
        # Zero-pad each tile to the full map and add: regions are disjoint, so the sum is
        # exact, and its backward only slices the gradient (no full-size copies).
        size = self._feature_res
        out = None
        for (r0, r1, c0, c1), tile in zip(regions, tiles, strict=True):
            padded = F.pad(tile[0], [c0, size - c1, r0, size - r1])
            out = padded if out is None else out + padded
        return out

    def mask_term(self, latent: torch.Tensor, features: torch.Tensor) -> torch.Tensor | None:
        """Mean ``|F - F0|`` over feature entries outside the editable region (algorithm §5)."""
        if self._outside is None:
            return None
        return (features - self._initial_features).abs()[:, self._outside].mean()

    def render(self, latent: torch.Tensor) -> np.ndarray:
        image, features = self.backend.render_with_features(self._full_ws(latent), self._generator)
        self._rendered = (latent.detach().clone(), features)
        return image

    def finish(self, latent: torch.Tensor) -> StartState:
        ws = self._full_ws(latent)
        info = {"model": self.backend.name, "kind": self.backend.kind, "source": "drag",
                "parent": self._parent_info}  # fmt: skip
        image = self.render(latent)
        return StartState(ws, self.image_size, image, info, dict(self._carried))

    # internals ------------------------------------------------------------------------

    def _known_map(self, latent: torch.Tensor) -> torch.Tensor | None:
        """The map of ``latent`` (read without a gradient) when it is one the session has:
        the start's, kept for the mask term, or that of the latent last rendered (the
        engine measures where the content went on the image it renders)."""
        kept = [(self._start_latent, self._initial_features), self._rendered]
        for known, features in kept:
            if features is not None and torch.equal(latent, known):
                return features
        return None

    def _full_ws(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.cat([latent.detach().to(self._frozen_ws.device), self._frozen_ws], dim=1)

    def _regions(self, boxes) -> list[Rect] | None:
        """Clipped, merged ``(r0, r1, c0, c1)`` regions; ``None`` when the full map is cheaper."""
        size = self._feature_res
        rects = []
        for box in boxes:
            r0, c0, r1, c1 = (int(v) for v in box)
            rect = clip_rect((r0, r1, c0, c1), size)
            if rect[0] < rect[1] and rect[2] < rect[3]:
                rects.append(rect)
        if not rects:
            return None
        merged = True
        while merged:
            merged = False
            for i in range(len(rects)):
                for j in range(i + 1, len(rects)):
                    if _near(rects[i], rects[j], MERGE_MARGIN):
                        a, b = rects[i], rects.pop(j)
                        rects[i] = (
                            min(a[0], b[0]),
                            max(a[1], b[1]),
                            min(a[2], b[2]),
                            max(a[3], b[3]),
                        )
                        merged = True
                        break
                if merged:
                    break
        area = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in rects)
        if area > FULL_MAP_FRACTION * size * size:
            return None
        return rects

    def _outside_mask(self, mask) -> torch.Tensor | None:
        """Feature pixels outside the editable region, or ``None`` when there is no mask term."""
        if mask is None:
            return None
        mask = check_mask_shape(mask, self.image_size)
        editable = torch.from_numpy((mask != 0).astype(np.float32))
        if not editable.any():
            return None  # nothing painted: no mask term (an empty mask must not freeze all)
        size = (self._feature_res, self._feature_res)
        resized = F.interpolate(
            editable[None, None], size=size, mode="bilinear", align_corners=False
        )
        outside = ~(resized[0, 0] > 0)
        if not outside.any():
            return None
        return outside.to(self.backend.device)


def _near(a: Rect, b: Rect, margin: int) -> bool:
    return (
        a[0] - margin < b[1]
        and b[0] - margin < a[1]
        and a[2] - margin < b[3]
        and b[2] - margin < a[3]
    )
