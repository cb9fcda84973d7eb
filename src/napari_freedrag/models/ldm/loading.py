"""Loading a Stable Diffusion 1.x diffusers folder (or a cached Hugging Face id) offline.

Every missing piece is named in one ModelError; nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from napari_freedrag.errors import ModelError
from napari_freedrag.models.ldm.backend import LDMBackend

_COMPONENTS = {
    "unet": ("config.json", "diffusion_pytorch_model"),
    "vae": ("config.json", "diffusion_pytorch_model"),
    "text_encoder": ("config.json", "model"),
    "tokenizer": (None, None),
    "scheduler": ("scheduler_config.json", None),
}

_HOW_TO_GET = (
    "download a Stable Diffusion 1.x model in diffusers format on a machine with internet, "
    "e.g. `hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir SD15` "
    "(or `huggingface-cli download ...`), copy the folder here and use ldm:SD15"
)


def _weights_variant(folder: Path, stem: str) -> str | None:
    """``None`` for standard weight files, ``"fp16"`` for an fp16-only download; raises if none."""
    for variant, suffix in ((None, ""), ("fp16", ".fp16")):
        # transformers names .bin text encoders pytorch_model.bin (and loads them weights-only)
        for name in (
            f"{stem}{suffix}.safetensors",
            f"{stem}{suffix}.bin",
            f"pytorch_{stem}{suffix}.bin",
        ):
            if (folder / name).is_file() or (folder / f"{name}.index.json").is_file():
                return variant
    raise FileNotFoundError(f"{folder.name}/{stem}.safetensors")


def _check_folder(folder: Path) -> dict[str, str | None]:
    """Weight variants per component; ModelError naming every missing piece."""
    missing, variants = [], {}
    if not (folder / "model_index.json").is_file():
        missing.append("model_index.json")
    for component, (config, weights) in _COMPONENTS.items():
        sub = folder / component
        if not sub.is_dir():
            missing.append(f"{component}/")
            continue
        if config and not (sub / config).is_file():
            missing.append(f"{component}/{config}")
        if component == "tokenizer":
            has_vocab = (sub / "vocab.json").is_file() and (sub / "merges.txt").is_file()
            if not (has_vocab or (sub / "tokenizer.json").is_file()):
                missing.append("tokenizer/vocab.json + merges.txt (or tokenizer.json)")
        if weights:
            try:
                variants[component] = _weights_variant(sub, weights)
            except FileNotFoundError as err:
                missing.append(f"{err.args[0]} (weights)")
    if missing:
        raise ModelError(
            f"Stable Diffusion folder {folder} is incomplete: missing {', '.join(missing)}; "
            + _HOW_TO_GET
        )
    return variants


def resolve_model_folder(spec: str) -> Path:
    """A local diffusers folder, or the snapshot of a Hugging Face id already in the cache."""
    if not spec.strip():
        raise ModelError("ldm: needs a folder or Hugging Face id after the colon; " + _HOW_TO_GET)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    looks_like_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~"))
    if looks_like_id and not path.exists():
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(spec, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
            raise ModelError(
                f"no diffusers folder {spec!r} and no Hugging Face cache entry for it "
                "(napari-freedrag never downloads); " + _HOW_TO_GET
            ) from None
    if path.exists():
        raise ModelError(f"{spec} is a file, not a diffusers model folder; " + _HOW_TO_GET)
    raise ModelError(f"Stable Diffusion folder {spec} does not exist; " + _HOW_TO_GET)


def load_ldm(
    spec: str,
    device: str | torch.device = "auto",
    *,
    num_inference_steps: int = 50,
    inversion_strength: float = 0.7,
    cpu_offload: bool = False,
) -> LDMBackend:
    """Load a Stable Diffusion 1.x diffusers folder (or cached HF id) without any network.

    ``num_inference_steps`` and ``inversion_strength`` are the DDIM settings (published: 50 and
    0.7, so ``z_t`` sits at t = 681); ``cpu_offload`` keeps each component on the CPU until
    it runs (small GPUs).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from napari_freedrag.config import resolve_device

    spec = str(spec).removeprefix("ldm:")
    folder = resolve_model_folder(spec)
    variants = _check_folder(folder)
    device = resolve_device(device)
    common = {"local_files_only": True}
    try:
        unet = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", variant=variants["unet"], **common
        )
        vae = AutoencoderKL.from_pretrained(
            folder, subfolder="vae", variant=variants["vae"], **common
        )
        text_encoder = CLIPTextModel.from_pretrained(
            folder, subfolder="text_encoder", variant=variants["text_encoder"], **common
        )
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **common)
        scheduler = DDIMScheduler.from_pretrained(
            folder, subfolder="scheduler", clip_sample=False, set_alpha_to_one=False, **common
        )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"cannot read the Stable Diffusion model in {folder}: {first_line}; " + _HOW_TO_GET
        ) from err
    if scheduler.config.prediction_type != "epsilon":
        raise ModelError(
            f"{folder} predicts {scheduler.config.prediction_type!r}; only epsilon-prediction "
            "Stable Diffusion 1.x models are supported"
        )
    return LDMBackend(
        unet, vae, text_encoder, tokenizer, scheduler,
        name=f"ldm:{spec}", folder=folder, device=device,
        num_inference_steps=num_inference_steps, inversion_strength=inversion_strength,
        cpu_offload=cpu_offload,
    )  # fmt: skip
