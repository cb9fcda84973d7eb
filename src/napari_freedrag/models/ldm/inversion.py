"""Deterministic DDIM inversion and sampling on a diffusers DDIMScheduler.

Inversion follows DragDiffusion's convention: walk the inference timesteps upwards
(1, 21, ..., 681 for 50 steps), at each step predicting the noise at the *next* timestep
and moving the latent from the previous timestep's noise level to it. Sampling runs the
scheduler's own (eta = 0) ``step`` back down from the start timestep.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: ``eps = predict(latents, timestep)``: the UNet with the prompt embeddings bound.
NoisePredictor = Callable[[torch.Tensor, int], torch.Tensor]


class DDIMSchedule:
    """The inference timesteps of one edit: ``n`` DDIM steps, the last ``strength·n`` inverted."""

    def __init__(self, scheduler, num_inference_steps: int, strength: float):
        if num_inference_steps < 1 or not 0 < strength <= 1:
            raise ValueError("num_inference_steps must be >= 1 and strength in (0, 1]")
        self.scheduler = scheduler
        scheduler.set_timesteps(num_inference_steps)
        self.timesteps = [int(t) for t in scheduler.timesteps]
        self.num_inverted = max(1, int(round(strength * num_inference_steps)))
        #: Index into ``timesteps`` of the optimised latent's timestep.
        self.start_index = num_inference_steps - self.num_inverted
        self.start_timestep = self.timesteps[self.start_index]
        self.step_ratio = scheduler.config.num_train_timesteps // num_inference_steps

    def _alpha(self, timestep: int) -> torch.Tensor:
        if timestep < 0:
            return self.scheduler.final_alpha_cumprod
        return self.scheduler.alphas_cumprod[timestep]

    def invert(self, predict: NoisePredictor, latents: torch.Tensor) -> torch.Tensor:
        """Noise a clean latent ``z_0`` up to ``z_t`` at :attr:`start_timestep`."""
        for timestep in reversed(self.timesteps[self.start_index :]):
            eps = predict(latents, timestep)
            alpha_from = self._alpha(timestep - self.step_ratio).to(latents.device)
            alpha_to = self._alpha(timestep).to(latents.device)
            clean = (latents - (1 - alpha_from).sqrt() * eps) / alpha_from.sqrt()
            latents = alpha_to.sqrt() * clean + (1 - alpha_to).sqrt() * eps
        return latents

    def step(self, eps: torch.Tensor, timestep: int, latents: torch.Tensor) -> torch.Tensor:
        """One deterministic DDIM step down from ``timestep`` (differentiable)."""
        return self.scheduler.step(eps, timestep, latents, eta=0.0).prev_sample

    def sample(
        self,
        predict: NoisePredictor,
        latents: torch.Tensor,
        first: int | None = None,
        stop: int | None = None,
    ) -> torch.Tensor:
        """Denoise from ``timesteps[first]`` (default: the start timestep) down to before
        ``timesteps[stop]`` (default: all the way to ``z_0``)."""
        first = self.start_index if first is None else first
        for timestep in self.timesteps[first:stop]:
            latents = self.step(predict(latents, timestep), timestep, latents)
        return latents
