"""FreeDrag / DragDiffusion on a Stable Diffusion 1.x model, built on diffusers and peft.

Pipeline (docs/ldm.md): the user's image is resized
to the model's working size, VAE-encoded and DDIM-inverted to ``z_t``; the engine
optimises ``z_t`` on the UNet's ``up_blocks[2]`` features; the result is sampled from
``[original z_t, edited z_t]`` with mutual self-attention and decoded.

Coordinates: a session's ``image_size`` is the **user's** original 2D size, and
``feature_scale`` maps those pixels to the half-working-resolution feature map, so points
placed on the user's image (or napari layer) need no conversion anywhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_freedrag import imaging
from napari_freedrag.engine.protocol import METHODS, StartState
from napari_freedrag.errors import InputError, ModelError
from napari_freedrag.models.ldm import lora
from napari_freedrag.models.ldm.inversion import DDIMSchedule
from napari_freedrag.models.ldm.session import LDMSession, LDMStart


class LDMBackend:
    """A Stable Diffusion 1.x model the drag engine can edit real images with."""

    kind = "ldm"

    def __init__(
        self, unet, vae, text_encoder, tokenizer, scheduler, *, name: str, folder: Path,
        device: torch.device, num_inference_steps: int = 50, inversion_strength: float = 0.7,
        cpu_offload: bool = False,
    ):  # fmt: skip
        self.name, self.folder, self.device = name, Path(folder), torch.device(device)
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        for model in (unet, vae, text_encoder):
            model.requires_grad_(False).eval()
        self.schedule = DDIMSchedule(scheduler, num_inference_steps, inversion_strength)
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        #: Longer side of the working image (512 for SD 1.5).
        self.native_size = int(unet.config.sample_size) * self.vae_scale
        #: Gradient scale through the fp16 UNet on CUDA (see :class:`.session.ScaleGrad`).
        self.grad_scale = 2.0**12 if self.device.type == "cuda" else 1.0
        self.cpu_offload = cpu_offload and self.device.type == "cuda"
        if self.cpu_offload:
            from accelerate import cpu_offload_with_hook

            hook = None
            for model in (text_encoder, unet, vae):
                _, hook = cpu_offload_with_hook(model, self.device, prev_module_hook=hook)
        else:
            for model in (unet, vae, text_encoder):
                model.to(self.device)
        self._adapters: set[str] = set()

    # -- small helpers

    def autocast(self) -> contextlib.AbstractContextManager:
        """fp16 autocast on CUDA (weights stay float32), nothing elsewhere."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def preset(self, method: str, image_size: tuple[int, int]):
        """FreeDrag's diffusion settings, or DragDiffusion's for ``draggan`` (its strict stop
        ``<`` 2 and supervision ``>=`` 2 feature px; docs/algorithm.md §6, §7b)."""
        from napari_freedrag.engine.presets import DragGANParams, FreeDragParams

        if method == "freedrag":
            return FreeDragParams(
                l=1.0, d=5.0, lr=0.01, exit_fraction=0.5, done_fraction=0.5,
                arrive_distance=2.0, arrive_units="feature", patch_grid=9,
                patch_radius=4.0, patch_units="feature", snap_to_feature_grid=True,
                preview_every=0,
            )  # fmt: skip
        return DragGANParams(
            lr=0.01, motion_radius=1.0, track_radius=3.0, units="feature",
            stop_distance=2.0, stop_comparison="<",
            supervise_distance=2.0, supervise_comparison=">=",
            motion_shape="square", motion_reduction="sum", track_metric="l1", mask_weight=0.1,
            snap_to_feature_grid=True, max_steps=80, preview_every=0,
        )  # fmt: skip

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        tokens = self.tokenizer(
            prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        ).input_ids  # fmt: skip
        return self.text_encoder(tokens.to(self.device))[0].float()

    def predictor(self, embeds: torch.Tensor) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The UNet's noise prediction with ``embeds`` (guidance scale 1: no CFG)."""

        def predict(latents: torch.Tensor, timestep: int) -> torch.Tensor:
            batch_embeds = embeds.expand(latents.shape[0], -1, -1)
            with self.autocast():
                eps = self.unet(latents, timestep, encoder_hidden_states=batch_embeds).sample
            return eps.float()

        return predict

    @torch.no_grad()
    def encode_image(self, rgb: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        with self.autocast():
            dist = self.vae.encode(pixels.to(self.device)).latent_dist
        return dist.mean.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """``(H, W, 3)`` uint8 of one latent, resized to ``size``."""
        with self.autocast():
            pixels = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        image = imaging.model_pixels_to_uint8(pixels[0])
        return imaging.resize_rgb(image.permute(1, 2, 0).cpu().numpy(), size)

    def use_lora(self, adapter: str | None) -> None:
        """Make ``adapter`` the UNet's only active LoRA (``None``: plain UNet)."""
        if not self._adapters:
            return
        if adapter is None:
            self.unet.disable_adapters()
        else:
            self.unet.set_adapter(adapter)
            self.unet.enable_adapters()

    def _prepare_lora(
        self, rgb: np.ndarray, prompt: str, z0: torch.Tensor, embeds: torch.Tensor,
        settings: lora.LoraSettings, progress: Callable[[int, int], None] | None,
    ) -> dict[str, Any]:  # fmt: skip
        """Train the image's LoRA or load it from the cache; activate it; return provenance."""
        key = lora.lora_key(rgb, f"{self.name}@{self.folder}", prompt, settings)
        adapter, path = f"img_{key[:16]}", lora.lora_dir() / f"{key}.safetensors"
        cached = path.is_file()
        if adapter not in self._adapters:
            if cached:
                lora.attach_lora(self.unet, adapter, lora.load_lora(path), settings)
            else:
                try:
                    state = lora.train_lora(
                        self.unet, self.schedule.scheduler, z0, embeds, adapter, settings,
                        self.autocast, progress,
                    )  # fmt: skip
                except BaseException:  # stopped or failed: leave no half-trained adapter
                    if adapter in getattr(self.unet, "peft_config", {}):
                        self.unet.delete_adapters(adapter)
                    raise
                lora.save_lora(path, state, settings)
            self._adapters.add(adapter)
        self.use_lora(adapter)
        return {"adapter": adapter, "file": str(path), "cached": cached, **vars(settings)}

    # -- Backend protocol

    def invert(
        self,
        image: Any,
        prompt: str = "",
        lora_steps: int = 0,
        *,
        value_range: tuple[float, float] | None = None,
        lora_rank: int = 16,
        lora_lr: float = 2e-4,
        progress: Callable[[int, int], None] | None = None,
    ) -> StartState:
        """A real image (any 2D gray/RGB/RGBA array of any dtype and size, or an image file)
        as a starting state.

        ``StartState.image`` is the reconstruction at the image's own size (RGB uint8);
        ``imaging.from_model_rgb(result, state.extra.source)`` maps any result back to
        the source's channels, dtype and value range. ``progress(step, total)`` follows
        LoRA training; raising from it (a Stop button) abandons the LoRA cleanly.
        """
        if int(lora_steps) < 0:
            raise InputError(f"lora_steps must be >= 0 (0 = no LoRA), got {lora_steps}")
        if isinstance(image, str | Path):
            from napari_freedrag import io

            image = io.read_image(image)
        rgb_user, source = imaging.to_model_rgb(image, value_range)
        work = imaging.working_size(source.size, self.native_size, self.vae_scale)
        rgb = imaging.resize_rgb(rgb_user, work)
        embeds = self.encode_prompt(prompt)
        z0 = self.encode_image(rgb)
        lora_info = None
        if lora_steps:
            settings = lora.LoraSettings(steps=int(lora_steps), rank=lora_rank, lr=lora_lr)
            lora_info = self._prepare_lora(rgb, prompt, z0, embeds, settings, progress)
        else:
            self.use_lora(None)
        with torch.no_grad():
            z_t = self.schedule.invert(self.predictor(embeds), z0)
            reconstruction = self.decode(
                self.schedule.sample(self.predictor(embeds), z_t), source.size
            )
        info = {"source": source.to_json(), "lora": lora_info}
        return self._state(z_t, z_t, embeds, prompt, source, work, reconstruction, info)

    def sample(self, seed: int, truncation: float = 0.7, prompt: str = "") -> StartState:
        """A generated starting image: noise from ``seed`` denoised down to the start timestep.

        ``truncation`` has no meaning for diffusion models and is ignored.
        """
        size = (self.native_size, self.native_size)
        latent_size = (size[0] // self.vae_scale, size[1] // self.vae_scale)
        generator = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((1, 4) + latent_size, generator=generator).to(self.device)
        embeds = self.encode_prompt(prompt)
        self.use_lora(None)
        predict = self.predictor(embeds)
        with torch.no_grad():
            z_t = self.schedule.sample(predict, noise, first=0, stop=self.schedule.start_index)
            image = self.decode(self.schedule.sample(predict, z_t), size)
        info = {"seed": int(seed), "lora": None}
        return self._state(z_t, z_t, embeds, prompt, None, size, image, info)

    def _state(self, z_t, z_orig, embeds, prompt, source, work, image, info) -> StartState:
        info = {
            "model": self.name, "kind": self.kind, "prompt": prompt,
            "working_size": list(work), "num_inference_steps": len(self.schedule.timesteps),
            "timestep": self.schedule.start_timestep, **info,
        }  # fmt: skip
        extra = LDMStart(
            z_t_orig=z_orig.detach(), prompt_embeds=embeds.detach(), source=source,
            working_size=tuple(work),
            lora_adapter=info["lora"]["adapter"] if info.get("lora") else None,
        )  # fmt: skip
        size = source.size if source is not None else tuple(work)
        return StartState(z_t.detach(), size, image, info, extra)

    def session(self, start: StartState, mask: np.ndarray | None, method: str) -> LDMSession:
        if method not in METHODS:
            raise InputError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
        if not isinstance(start.extra, LDMStart):
            raise InputError(
                "this start state was not made by a latent diffusion model: "
                "start from gen.invert(image) or gen.sample(seed)"
            )
        if start.info.get("model") != self.name:
            raise ModelError(
                f"this start state was made with {start.info.get('model')!r}, not {self.name!r}: "
                "invert the image again with this model"
            )
        lora_info = start.info.get("lora")
        if lora_info and lora_info["adapter"] not in self._adapters:
            self._reload_lora(lora_info)
        return LDMSession(self, start, mask, method)

    def _reload_lora(self, lora_info: dict[str, Any]) -> None:
        """Load a state's LoRA from the cache (e.g. a state kept from an earlier session)."""
        path = Path(lora_info["file"])
        if not path.is_file():
            raise ModelError(
                f"this edit's per-image LoRA {path} is gone from the cache: start again from "
                "gen.invert(image, lora_steps=...)"
            )
        fields = ("steps", "rank", "lr", "batch", "seed")
        settings = lora.LoraSettings(**{name: lora_info[name] for name in fields})
        lora.attach_lora(self.unet, lora_info["adapter"], lora.load_lora(path), settings)
        self._adapters.add(lora_info["adapter"])
