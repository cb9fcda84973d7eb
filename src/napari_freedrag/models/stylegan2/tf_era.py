"""TensorFlow-era (``dnnlib.tflib``) StyleGAN2 generators, converted to NVIDIA's PyTorch names.

The first StyleGAN2 release pickled TensorFlow networks: a ``Network`` object per part
with its variables as NumPy arrays. This module maps those variables to the names and
layouts of the PyTorch generator (as NVIDIA's own conversion does: transposed dense and
conv weights, a flipped up-sampling kernel, the affine bias offset by one). Every array
built here is charged to the load's budget.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_freedrag.errors import ModelError
from napari_freedrag.models.stylegan2.budget import LoadBudget
from napari_freedrag.models.stylegan2.config import normalise_config, plain_config
from napari_freedrag.models.stylegan2.unpickler import PendingArray, TFNetwork

#: The most networks (components) a TF-era file may nest.
MAX_COMPONENTS = 64

#: TF static kwargs -> (our config key, default), as NVIDIA's own conversion reads them.
_TF_KWARGS = {
    "latent_size": ("z_dim", 512),
    "label_size": ("c_dim", 0),
    "dlatent_size": ("w_dim", 512),
    "resolution": ("img_resolution", 1024),
    "num_channels": ("img_channels", 3),
}
#: TF options our generator implements only at these values.
_TF_FIXED = {
    "architecture": "skip",
    "nonlinearity": "lrelu",
    "mapping_nonlinearity": "lrelu",
    "resample_kernel": [1, 3, 3, 1],
    "mapping_lrmul": 0.01,
    "use_noise": True,
    "mapping_fmaps": None,
    "fmap_decay": 1.0,
}


def _tf_variables(network: TFNetwork, source: str) -> dict[str, np.ndarray]:
    """Every variable of a TF network and its components under ``component/name`` keys."""
    found: dict[str, np.ndarray] = {}
    visited = [0]

    def visit(prefix: str, net) -> None:
        visited[0] += 1
        if visited[0] > MAX_COMPONENTS:
            raise ModelError(f"{source}: more than {MAX_COMPONENTS} TF network components")
        if not isinstance(net, TFNetwork):
            raise ModelError(f"{source}: a TF network component is a {type(net).__name__}")
        for entry in net.state.get("variables") or ():
            if not (isinstance(entry, tuple | list) and len(entry) == 2):
                raise ModelError(f"{source}: a TF variable of {prefix or 'G'} is malformed")
            name, value = entry
            if isinstance(value, PendingArray):
                value = value.array
            if not isinstance(value, np.ndarray | np.generic) or value.dtype.kind != "f":
                raise ModelError(f"{source}: TF variable {prefix}{name} is not a float array")
            found[prefix + str(name)] = value
        components = net.state.get("components") or {}
        if not isinstance(components, dict):
            raise ModelError(
                f"{source}: the components of TF network {prefix or 'G'} are malformed"
            )
        for name, component in components.items():
            visit(f"{prefix}{name}/", component)

    visit("", network)
    return found


def convert_tf_generator(network: TFNetwork, budget: LoadBudget):
    """``(config, state_dict)`` of a TF-era ``Gs`` network, every new array charged first."""
    source = budget.source
    version = network.state.get("version", 0)
    if not isinstance(version, int) or version < 4:
        raise ModelError(
            f"{source}: TensorFlow network pickle version {version!r} is too old "
            "(StyleGAN1 or pre-release); only StyleGAN2 config-f files are read"
        )
    kwargs = plain_config(network.state.get("static_kwargs") or {}, source)
    if not isinstance(kwargs, dict):
        raise ModelError(f"{source}: the TF-era generator's static_kwargs are not a dict")
    if kwargs.get("mapping_fmaps") in (None, kwargs.get("dlatent_size", 512)):
        kwargs.pop("mapping_fmaps", None)
    for key, allowed in _TF_FIXED.items():
        value = kwargs.get(key, allowed)
        if (list(value) if isinstance(value, tuple) else value) != allowed:
            raise ModelError(
                f"{source}: TF-era generator with {key}={value!r} is not supported "
                f"(only {allowed!r})"
            )
    if kwargs.get("label_size", 0):
        raise ModelError(f"{source}: conditional TF-era generators are not supported")
    raw = {ours: kwargs.get(theirs, default) for theirs, (ours, default) in _TF_KWARGS.items()}
    raw["mapping_kwargs"] = {"num_layers": kwargs.get("mapping_layers", 8)}
    raw["channel_base"] = int(kwargs.get("fmap_base", 16384)) * 2  # TF counts per half resolution
    raw["channel_max"] = kwargs.get("fmap_max", 512)
    config = normalise_config(raw, source)
    variables = _tf_variables(network, source)
    if any(name.startswith("synthesis/ToRGB_lod") for name in variables):
        raise ModelError(f"{source}: TF-era generator with architecture='orig' is not supported")

    def take(name: str) -> np.ndarray:
        if name not in variables:
            raise ModelError(f"{source}: TF-era generator lacks variable {name}")
        value = variables[name]
        budget.charge(value.size * 4, f"TF variable {name}")  # the float32 copy made below
        return np.array(value, dtype=np.float32)

    def affine(prefix: str, tf_layer: str) -> None:
        state[prefix + "affine.weight"] = take(tf_layer + "/mod_weight").T
        state[prefix + "affine.bias"] = take(tf_layer + "/mod_bias") + 1  # TF adds the 1 later

    taps = np.array([1, 3, 3, 1], dtype=np.float64)
    resample_filter = (np.outer(taps, taps) / np.outer(taps, taps).sum()).astype(np.float32)
    state: dict[str, np.ndarray] = {"mapping.w_avg": take("dlatent_avg")}
    for index in range(config["mapping_kwargs"]["num_layers"]):
        state[f"mapping.fc{index}.weight"] = take(f"mapping/Dense{index}/weight").T
        state[f"mapping.fc{index}.bias"] = take(f"mapping/Dense{index}/bias")
    resolution, noise_index = 4, 0
    while resolution <= config["img_resolution"]:
        tf_block, block = f"synthesis/{resolution}x{resolution}/", f"synthesis.b{resolution}."
        state[block + "resample_filter"] = resample_filter
        layers = (
            [("conv1", "Conv")] if resolution == 4 else [("conv0", "Conv0_up"), ("conv1", "Conv1")]
        )
        if resolution == 4:
            state[block + "const"] = take(tf_block + "Const/const")[0]
        for ours, theirs in layers:
            weight = take(tf_block + theirs + "/weight")
            if theirs == "Conv0_up":  # TF upsamples with a transposed conv: flip the kernel
                weight = weight[::-1, ::-1]
            prefix = f"{block}{ours}."
            state[prefix + "weight"] = weight.transpose(3, 2, 0, 1)
            state[prefix + "bias"] = take(tf_block + theirs + "/bias")
            state[prefix + "noise_strength"] = take(tf_block + theirs + "/noise_strength")
            state[prefix + "noise_const"] = take(f"synthesis/noise{noise_index}")[0, 0]
            state[prefix + "resample_filter"] = resample_filter
            affine(prefix, tf_block + theirs)
            noise_index += 1
        state[block + "torgb.weight"] = take(tf_block + "ToRGB/weight").transpose(3, 2, 0, 1)
        state[block + "torgb.bias"] = take(tf_block + "ToRGB/bias")
        affine(block + "torgb.", tf_block + "ToRGB")
        resolution *= 2
    tensors = {}
    for name, value in state.items():
        budget.charge(value.size * 4, f"weight {name}")  # the contiguous copy
        tensors[name] = torch.from_numpy(np.array(value, dtype=np.float32, order="C"))
    return config, tensors
