"""NVIDIA's reference generators (committed under _tests/data), loaded into our network."""

from __future__ import annotations

import json

import numpy as np
import torch

from napari_freedrag.models.stylegan2.network import Generator

TOLERANCE = 1e-5  # relative L2; op-order differences are ~1e-6, real bugs 0.17-0.55


def rel_l2(ours: torch.Tensor, reference: np.ndarray) -> float:
    ours = ours.detach().numpy().astype(np.float64)
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def load_fixture(shared_fixtures, name):
    folder = shared_fixtures / "stylegan2" / name
    config = json.loads((folder / "config.json").read_text())
    generator = Generator(**config["init_kwargs"]).eval().requires_grad_(False)
    with np.load(folder / "weights.npz") as weights:
        state = {key: torch.from_numpy(weights[key]) for key in weights.files}
    generator.load_state_dict(state, strict=True)  # every official name, nothing else
    with np.load(folder / "reference.npz") as ref:
        reference = {key: ref[key] for key in ref.files}
    return config, generator, reference
