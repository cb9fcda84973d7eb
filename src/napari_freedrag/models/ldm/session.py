"""One drag on an inverted ``z_t``: UNet features, the latent mask term, rendering.

During optimisation without a mask term the UNet runs only as far as the feature block
(``up_blocks[2]``); the prompt embedding and the original latent come with the start
state (:class:`LDMStart`), so no step repeats text-encoder or VAE work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from napari_freedrag import imaging
from napari_freedrag.engine.protocol import StartState
from napari_freedrag.engine.validate import check_mask_shape
from napari_freedrag.models.ldm.attention import mutual_self_attention

if TYPE_CHECKING:
    from napari_freedrag.models.ldm.backend import LDMBackend

#: The UNet decoder block whose output the drag is computed on.
FEATURE_BLOCK = 2


@dataclass(frozen=True)
class LDMStart:
    """What an LDM start state carries besides its latent (``StartState.extra``)."""

    #: The inverted latent of the original image (mutual self-attention reads it).
    z_t_orig: torch.Tensor
    #: The prompt's text-encoder output, computed once per image.
    prompt_embeds: torch.Tensor
    #: How results map back to the user's channels, dtype and range (``None``: sampled).
    source: imaging.SourceInfo | None
    #: ``(h, w)`` of the model's working image.
    working_size: tuple[int, int]
    #: The per-image LoRA adapter's name, if one was trained.
    lora_adapter: str | None = None


class _FeaturesReady(Exception):
    """Raised by the feature hook to skip the rest of the UNet when only features are needed."""


class ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``factor`` on the way back.

    Under fp16 autocast, per-element gradients of a mean over ~50 000 feature values
    (~2e-5) fall below float16's normal range; scaling them up on entering the UNet's
    backward and down again at the float32 latent keeps them (a static GradScaler).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


class LDMSession:
    """One drag on ``z_t``: UNet features, the latent mask term, mutual-attention rendering."""

    def __init__(
        self, backend: LDMBackend, start: StartState, mask: np.ndarray | None, method: str
    ):
        self.backend, self.start, self.method = backend, start, method
        self.image_size = tuple(int(s) for s in start.image_size)
        extra: LDMStart = start.extra
        self.embeds = extra.prompt_embeds.to(backend.device)
        self.z_orig = extra.z_t_orig.to(backend.device)
        self.timestep = backend.schedule.start_timestep
        self.adapter = extra.lora_adapter
        backend.use_lora(self.adapter)
        self.latent = start.latent.detach().clone().to(backend.device).requires_grad_(True)
        work_h, work_w = extra.working_size
        self.feature_size = (work_h // 2, work_w // 2)
        self.feature_scale = (
            self.feature_size[0] / self.image_size[0],
            self.feature_size[1] / self.image_size[1],
        )
        self.keep = self._keep_weights(mask)
        self._noise_cache: tuple[torch.Tensor, int, torch.Tensor] | None = None
        self._render_cache: tuple[torch.Tensor, np.ndarray] | None = None
        if self.keep is not None:
            with torch.no_grad():
                eps = backend.predictor(self.embeds)(self.latent, self.timestep)
                self.reference_prev = backend.schedule.step(
                    eps, self.timestep, self.latent.detach()
                )

    def _keep_weights(self, mask: np.ndarray | None) -> torch.Tensor | None:
        """``1 − mask`` at latent resolution (nearest), or ``None`` when nothing is painted."""
        if mask is None:
            return None
        mask = check_mask_shape(mask, self.image_size)
        if not mask.any():
            return None
        editable = torch.from_numpy((mask != 0).astype(np.float32))[None, None]
        editable = F.interpolate(editable, size=self.latent.shape[-2:], mode="nearest")
        return (1.0 - editable).to(self.backend.device)

    def _unet_pass(self, latent: torch.Tensor, need_noise: bool):
        """``(features (1, C, h, w), noise or None)``; stops after the feature block if it can."""
        captured = {}

        def hook(module, args, output):
            captured["features"] = output
            if not need_noise:
                raise _FeaturesReady

        scale = self.backend.grad_scale
        handle = self.backend.unet.up_blocks[FEATURE_BLOCK].register_forward_hook(hook)
        noise = None
        try:
            with self.backend.autocast():
                noise = self.backend.unet(
                    ScaleGrad.apply(latent, 1.0 / scale),
                    self.timestep,
                    encoder_hidden_states=self.embeds,
                ).sample
        except _FeaturesReady:
            pass
        finally:
            handle.remove()
        features = ScaleGrad.apply(captured["features"].float(), scale)
        return features, None if noise is None else ScaleGrad.apply(noise.float(), scale)

    def features(self, latent: torch.Tensor, boxes=None) -> torch.Tensor:
        """``up_blocks[2]`` output resized bilinearly to half the working size, ``(C, h, w)``."""
        need_noise = self.keep is not None and torch.is_grad_enabled()
        raw, noise = self._unet_pass(latent, need_noise)
        if noise is not None:
            self._noise_cache = (latent, latent._version, noise)
        return F.interpolate(raw, size=self.feature_size, mode="bilinear")[0]

    def mask_term(self, latent: torch.Tensor, features: torch.Tensor) -> torch.Tensor | None:
        """Change of ``x_{t−1}`` outside the mask (FreeDrag: mean; DragDiffusion: sum)."""
        if self.keep is None:
            return None
        cache = self._noise_cache
        if cache is not None and cache[0] is latent and cache[1] == latent._version:
            noise = cache[2]
        else:
            noise = self._unet_pass(latent, need_noise=True)[1]
        prev = self.backend.schedule.step(noise, self.timestep, latent)
        change = (prev - self.reference_prev).abs() * self.keep
        return change.sum() if self.method == "draggan" else change.mean()

    def render(self, latent: torch.Tensor) -> np.ndarray:
        """Sample ``[original, edited]`` with mutual self-attention; the edited image, user size."""
        latent = latent.detach()
        if self._render_cache is not None and torch.equal(self._render_cache[0], latent):
            return self._render_cache[1]
        backend = self.backend
        backend.use_lora(self.adapter)  # another image's session may have run in between
        with torch.no_grad(), mutual_self_attention(backend.unet):
            pair = torch.cat([self.z_orig, latent])
            z0 = backend.schedule.sample(backend.predictor(self.embeds), pair)
        image = backend.decode(z0[1:], self.image_size)
        self._render_cache = (latent.clone(), image)
        return image

    def finish(self, latent: torch.Tensor) -> StartState:
        image = self.render(latent)
        info = {**self.start.info, "edited": True}
        return StartState(latent.detach().clone(), self.image_size, image, info, self.start.extra)
