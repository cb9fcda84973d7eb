"""Mutual self-attention: the edited branch reads the original's keys and values."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.models.attention_processor import Attention, AttnProcessor2_0  # noqa: E402

from napari_freedrag._tests.ldm_tiny import SD15_UNET
from napari_freedrag.models.ldm.attention import (  # noqa: E402
    MutualSelfAttentionProcessor,
    mutual_layer_names,
    mutual_self_attention,
    self_attention_names,
)


def test_sd15_mutual_layers_are_transformer_layers_10_to_15():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
    names = self_attention_names(unet)
    assert len(names) == 16
    assert names[0].startswith("down_blocks.0") and names[6].startswith("mid_block")
    mutual = mutual_layer_names(unet)
    assert mutual == names[10:]
    assert [n.split(".")[1] for n in mutual] == ["2"] * 3 + ["3"] * 3  # up_blocks 2 and 3


def _attention() -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=16, heads=2, dim_head=8).eval()


def test_original_half_is_plain_self_attention_and_edited_half_reads_the_original():
    attn = _attention()
    original, edited = torch.randn(1, 12, 16), torch.randn(1, 12, 16)
    with torch.no_grad():
        mutual = MutualSelfAttentionProcessor()(attn, torch.cat([original, edited]))
        plain = AttnProcessor2_0()(attn, torch.cat([original, edited]))
        # what the edited branch should compute: its queries on the original's keys/values
        q = attn.to_q(edited).view(1, 12, 2, 8).transpose(1, 2)
        k = attn.to_k(original).view(1, 12, 2, 8).transpose(1, 2)
        v = attn.to_v(original).view(1, 12, 2, 8).transpose(1, 2)
        expected = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1) @ v
        expected = attn.to_out[0](expected.transpose(1, 2).reshape(1, 12, 16))
    torch.testing.assert_close(mutual[:1], plain[:1])
    torch.testing.assert_close(mutual[1:], expected)
    assert not torch.allclose(mutual[1:], plain[1:])


def test_processors_are_installed_only_inside_the_context(tmp_path):
    from napari_freedrag._tests.ldm_tiny import build_tiny_pipeline

    folder = build_tiny_pipeline(tmp_path / "tiny")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    before = dict(unet.attn_processors)
    with mutual_self_attention(unet) as names:
        assert len(names) == 4  # of 10 self-attention layers, by SD 1.5's proportion
        installed = unet.attn_processors
        mutual = {n for n, p in installed.items() if isinstance(p, MutualSelfAttentionProcessor)}
        assert mutual == set(names)
    assert {n: type(p) for n, p in unet.attn_processors.items()} == {
        n: type(p) for n, p in before.items()
    }
