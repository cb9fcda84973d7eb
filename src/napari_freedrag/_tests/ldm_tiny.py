"""A tiny random-weight Stable Diffusion 1.x pipeline, built offline for tests.

Same block topology as SD 1.5 (UNet: three CrossAttnDownBlock2D + DownBlock2D, UpBlock2D +
three CrossAttnUpBlock2D; VAE with a scale factor of 8; CLIP text encoder; DDIM with SD
1.5's scheduler values), tiny channels, so that tests load it through exactly the path a
user's downloaded model takes. The tokenizer vocabulary is written to disk here: nothing
is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

#: Native working size of the tiny pipeline: UNet sample_size 8 x VAE scale factor 8.
TINY_NATIVE_SIZE = 64


def _tiny_vocab() -> dict[str, int]:
    """A byte-level BPE vocabulary: every byte symbol (alone and word-final) and two specials."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    shifted = [256 + i for i in range(256 - len(printable))]
    symbols = [chr(c) for c in printable + shifted]  # GPT-2's byte-to-symbol alphabet
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
        vocab.setdefault(symbol + "</w>", len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab


def build_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """Write a random-weight SD-1.x-topology diffusers folder to ``folder`` and return it."""
    import diffusers
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_NATIVE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=TINY_NATIVE_SIZE,
    )
    vocab = _tiny_vocab()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    components = {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}
    for name, component in components.items():
        component.save_pretrained(folder / name)
    scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__}
    libraries = {"tokenizer": "transformers", "text_encoder": "transformers"}
    for name, component in {**components, "scheduler": scheduler}.items():
        index[name] = [libraries.get(name, "diffusers"), type(component).__name__]
    index.update(safety_checker=[None, None], feature_extractor=[None, None])
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


#: Stable Diffusion 1.5's UNet configuration (random weights: speed and layer-layout checks).
SD15_UNET = dict(
    sample_size=64,
    cross_attention_dim=768,
    attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    layers_per_block=2,
)
