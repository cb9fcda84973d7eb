"""Per-image LoRA on the UNet attention projections, trained with peft and cached on disk.

Fitting a small LoRA to the one image being edited makes the UNet reconstruct it
faithfully, which keeps the edit's identity (docs/algorithm.md §6: rank 16, 200 steps, lr 2e-4,
batch 4, AdamW). Training is minutes on a GPU and hours on a CPU, so each LoRA is
saved under ``<home>/lora/<key>.safetensors`` where the key hashes the image content,
the model and every training setting; a second edit of the same image reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass(frozen=True)
class LoraSettings:
    """Everything that changes a trained LoRA (part of its cache key)."""

    steps: int
    rank: int = 16
    lr: float = 2e-4
    batch: int = 4
    seed: int = 0


def lora_dir() -> Path:
    """Per-image LoRAs live beside the checkpoints, in the one folder the user controls."""
    from napari_freedrag.config import checkpoint_dir

    return checkpoint_dir() / "lora"


def lora_key(image: np.ndarray, model_id: str, prompt: str, settings: LoraSettings) -> str:
    """A hash of the working-size RGB image, the model, the prompt and the training settings."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(image).tobytes())
    meta = {"shape": list(image.shape), "model": model_id, "prompt": prompt, **asdict(settings)}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _config(settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.rank,
        init_lora_weights="gaussian",
        target_modules=TARGET_MODULES,
    )


def _adapter_parameters(unet, adapter: str) -> list[torch.nn.Parameter]:
    return [p for name, p in unet.named_parameters() if "lora_" in name and f".{adapter}." in name]


def train_lora(
    unet,
    scheduler,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    adapter: str,
    settings: LoraSettings,
    autocast: Callable[[], AbstractContextManager],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Add adapter ``adapter`` to ``unet``, fit it to ``latents`` (the image's ``z_0``) with
    the usual noise-prediction loss, and return its weights (peft state-dict names)."""
    from peft.utils import get_peft_model_state_dict
    from tqdm.auto import tqdm

    unet.add_adapter(_config(settings), adapter_name=adapter)
    unet.requires_grad_(False)
    params = _adapter_parameters(unet, adapter)
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=settings.lr)
    # fp16 autocast on CUDA needs loss scaling; a disabled scaler is a no-op elsewhere
    scaler = torch.amp.GradScaler(latents.device.type, enabled=latents.device.type == "cuda")
    generator = torch.Generator().manual_seed(settings.seed)
    batch_latents = latents.detach().expand(settings.batch, -1, -1, -1)
    embeds = prompt_embeds.detach().expand(settings.batch, -1, -1)
    num_train = scheduler.config.num_train_timesteps
    unet.train()
    try:
        for step in tqdm(range(settings.steps), desc="per-image LoRA", disable=None):
            noise = torch.randn(batch_latents.shape, generator=generator).to(latents)
            timesteps = torch.randint(0, num_train, (settings.batch,), generator=generator)
            noisy = scheduler.add_noise(batch_latents, noise, timesteps)
            with autocast():
                pred = unet(
                    noisy, timesteps.to(latents.device), encoder_hidden_states=embeds
                ).sample
            loss = F.mse_loss(pred.float(), noise.float())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if progress is not None:
                progress(step + 1, settings.steps)
    finally:
        unet.eval()
        unet.requires_grad_(False)
    log.info("trained LoRA %s for %d steps (last loss %.4f)", adapter, settings.steps, loss.item())
    state = get_peft_model_state_dict(unet, adapter_name=adapter)
    return {name: tensor.detach().float().cpu().contiguous() for name, tensor in state.items()}


def attach_lora(unet, adapter: str, state: dict[str, torch.Tensor], settings: LoraSettings) -> None:
    """Add adapter ``adapter`` to ``unet`` with saved weights ``state``."""
    from peft.utils import set_peft_model_state_dict

    unet.add_adapter(_config(settings), adapter_name=adapter)
    device = next(unet.parameters()).device
    set_peft_model_state_dict(
        unet, {k: v.to(device) for k, v in state.items()}, adapter_name=adapter
    )
    unet.requires_grad_(False)


def save_lora(path: Path, state: dict[str, torch.Tensor], settings: LoraSettings) -> None:
    """Write the weights atomically (a crash never leaves a half file that would be reused)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file(state, str(partial), metadata={k: str(v) for k, v in asdict(settings).items()})
    partial.replace(path)


def load_lora(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))
