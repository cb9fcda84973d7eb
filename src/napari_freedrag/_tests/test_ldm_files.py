"""Stable Diffusion folders as users have them: old ``.bin`` text encoders, empty specs."""

from __future__ import annotations

import shutil

import pytest
import torch

from napari_freedrag.errors import ModelError
from napari_freedrag.models.ldm.loading import load_ldm


def test_text_encoder_saved_as_pytorch_model_bin_loads(tiny_ldm_folder, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "sd-old"
    shutil.copytree(tiny_ldm_folder, folder)
    encoder = folder / "text_encoder"
    weights = load_file(str(encoder / "model.safetensors"))
    (encoder / "model.safetensors").unlink()
    torch.save(weights, encoder / "pytorch_model.bin")

    backend = load_ldm(str(folder), device="cpu", num_inference_steps=2)

    loaded = backend.text_encoder.state_dict()
    name = next(iter(weights))
    torch.testing.assert_close(loaded[name], weights[name])


@pytest.mark.parametrize("spec", ["ldm:", "ldm:  ", ""])
def test_ldm_with_no_path_is_refused_instead_of_searching_the_current_folder(spec):
    with pytest.raises(ModelError, match="needs a folder or Hugging Face id after the colon"):
        load_ldm(spec, device="cpu")
