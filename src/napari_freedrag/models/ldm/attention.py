"""Mutual self-attention as a diffusers attention processor.

The final sampling denoises ``[original z_t, edited z_t]`` as one batch. In the decoder's
later self-attention layers the edited half reads keys and values of the original half,
so the edited image keeps the original's appearance (identity, texture) while its layout
follows the dragged latent. Spec: transformer layers 10-15 of SD 1.5's 16, from the first
sampling step; other UNets get the same proportion of their layers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

#: SD 1.5 has 16 transformer layers; mutual self-attention starts at layer 10.
MUTUAL_FIRST_LAYER, SD15_LAYERS = 10, 16

_BLOCK_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


class MutualSelfAttentionProcessor:
    """Self-attention where the second half of the batch attends to the first half's keys/values.

    The first half (the original branch) therefore computes ordinary self-attention.
    Written for the ``attn1`` of diffusers' ``BasicTransformerBlock`` (3D hidden states).
    """

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or hidden_states.ndim != 3:
            raise RuntimeError("mutual self-attention only applies to 3D self-attention layers")
        batch, tokens, _ = hidden_states.shape
        if batch % 2:
            raise RuntimeError("mutual self-attention needs an [original, edited] batch")
        residual = hidden_states
        query, key, value = (
            attn.to_q(hidden_states),
            attn.to_k(hidden_states),
            attn.to_v(hidden_states),
        )
        half = batch // 2
        key = torch.cat([key[:half], key[:half]])
        value = torch.cat([value[:half], value[:half]])
        head_dim = query.shape[-1] // attn.heads

        def split_heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        query, key, value = split_heads(query), split_heads(key), split_heads(value)
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).reshape(batch, tokens, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def self_attention_names(unet) -> list[str]:
    """Processor names of the UNet's self-attention (``attn1``) layers in forward order."""
    names = [name for name in unet.attn_processors if name.endswith("attn1.processor")]
    return sorted(names, key=lambda name: _BLOCK_ORDER[name.split(".")[0]])


def mutual_layer_names(unet) -> list[str]:
    """The decoder's later self-attention layers: SD 1.5's layers 10-15, by proportion."""
    names = self_attention_names(unet)
    first = round(MUTUAL_FIRST_LAYER / SD15_LAYERS * len(names))
    return names[first:]


@contextmanager
def mutual_self_attention(unet) -> Iterator[list[str]]:
    """Install :class:`MutualSelfAttentionProcessor` on the later layers; restore on exit."""
    original = dict(unet.attn_processors)
    mutual = mutual_layer_names(unet)
    processor = MutualSelfAttentionProcessor()
    unet.set_attn_processor(
        {name: processor if name in mutual else p for name, p in original.items()}
    )
    try:
        yield mutual
    finally:
        unet.set_attn_processor(original)
