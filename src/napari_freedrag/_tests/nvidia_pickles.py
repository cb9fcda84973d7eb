"""Build NVIDIA-format StyleGAN2 pickles without NVIDIA's code, for the loader tests.

Real ``.pkl`` files call ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` for
every network object and hold ``dnnlib.util.EasyDict`` values.  We register stand-in
modules under those names just long enough to pickle, so the files name exactly the
globals real files name, then remove them again so nothing can resolve them on load.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import torch

BUFFER_NAMES = ("resample_filter", "noise_const", "w_avg")

#: Class names NVIDIA's networks.py gives each level of the generator.
_CLASS_OF_CHILD = {
    "mapping": "MappingNetwork",
    "synthesis": "SynthesisNetwork",
    "torgb": "ToRGBLayer",
    "affine": "FullyConnectedLayer",
}


class EasyDict(dict):
    """Same shape as ``dnnlib.util.EasyDict``: a dict with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Network:
    """Same pickled shape as TF-era ``dnnlib.tflib.network.Network`` (state via BUILD)."""

    def __init__(self, name, static_kwargs, variables, components=None, module_src="import tf\n"):
        self._state = {
            "version": 4,
            "name": name,
            "static_kwargs": static_kwargs,
            "components": components or {},
            "build_module_src": module_src,
            "build_func_name": f"training.networks_stylegan2.{name}",
            "variables": list(variables.items()),
        }

    def __getstate__(self):
        return self._state


def _reconstruct_persistent_obj(meta):  # pragma: no cover - must never be called on load
    raise AssertionError("the loader executed NVIDIA's reconstruct function")


class PersistentObject:
    """Pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``."""

    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


class Reduce:
    """Pickles as ``func(*args)``: how a hostile file asks the loader to run something."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@contextlib.contextmanager
def nvidia_modules():
    """Make ``torch_utils.persistence`` and ``dnnlib.util`` importable while pickling."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    tflib_network = types.ModuleType("dnnlib.tflib.network")
    tflib_network.Network = Network
    fakes = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
        "dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
        "dnnlib.tflib.network": tflib_network,
    }
    saved = {name: sys.modules.get(name) for name in fakes}
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    EasyDict.__module__ = "dnnlib.util"
    Network.__module__ = "dnnlib.tflib.network"
    sys.modules.update(fakes)
    try:
        yield
    finally:
        _reconstruct_persistent_obj.__module__ = __name__
        EasyDict.__module__ = __name__
        Network.__module__ = __name__
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def module_state(
    parameters=None, buffers=None, modules=None, init_kwargs=None, **attributes
) -> dict:
    """A ``torch.nn.Module.__dict__`` as NVIDIA's persistence pickles it."""
    state = {
        "training": False,
        "_parameters": OrderedDict(
            (name, torch.nn.Parameter(value, requires_grad=False))
            for name, value in (parameters or {}).items()
        ),
        "_buffers": OrderedDict(buffers or {}),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": OrderedDict(modules or {}),
        "_init_args": (),
        "_init_kwargs": EasyDict(init_kwargs or {}),
    }
    state.update(attributes)
    return state


def persistent(
    class_name: str, state: dict, module_src: str = "import torch\n"
) -> PersistentObject:
    return PersistentObject(
        {
            "type": "class",
            "version": 4,
            "module_src": module_src,
            "class_name": class_name,
            "state": state,
        }
    )


def _tree(weights: dict[str, np.ndarray]) -> dict:
    root: dict = {}
    for name, value in weights.items():
        node = root
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = torch.from_numpy(np.array(value))
    return root


def _to_persistent(name: str, node: dict, module_src: str) -> PersistentObject:
    tensors = {key: value for key, value in node.items() if isinstance(value, torch.Tensor)}
    children = {
        key: _to_persistent(key, value, module_src)
        for key, value in node.items()
        if isinstance(value, dict)
    }
    class_name = _CLASS_OF_CHILD.get(name)
    if class_name is None:
        class_name = (
            "SynthesisBlock"
            if name.startswith("b") and name[1:].isdigit()
            else ("SynthesisLayer" if name.startswith("conv") else "FullyConnectedLayer")
        )
    state = module_state(
        parameters={key: value for key, value in tensors.items() if key not in BUFFER_NAMES},
        buffers={key: value for key, value in tensors.items() if key in BUFFER_NAMES},
        modules=children,
        weight_gain=np.float64(0.125),  # plain attributes: NumPy scalars appear in real files
        activation="lrelu",
    )
    return persistent(class_name, state, module_src)


def init_kwargs(config: dict, layout: str) -> EasyDict:
    """The generator's ``init_kwargs`` as stylegan2-ada-pytorch ("ada"), its TF converter
    ("converted") or the stylegan3 repository ("stylegan3") writes it."""
    kwargs = config.get("init_kwargs", config)
    synthesis = dict(kwargs["synthesis_kwargs"])
    common = {
        "z_dim": kwargs["z_dim"],
        "w_dim": kwargs["w_dim"],
        "mapping_kwargs": EasyDict(kwargs["mapping_kwargs"]),
        "c_dim": kwargs["c_dim"],
        "img_resolution": kwargs["img_resolution"],
        "img_channels": kwargs["img_channels"],
    }
    if layout == "ada":
        return EasyDict(common, synthesis_kwargs=EasyDict(synthesis))
    if layout == "converted":  # what NVIDIA's TF->PyTorch converter writes (self-distilled files)
        common["mapping_kwargs"].update(
            embed_features=None, layer_features=None, activation="lrelu", lr_multiplier=0.01,
            w_avg_beta=0.995,
        )  # fmt: skip
        synthesis.update(
            architecture="skip", resample_filter=[1, 3, 3, 1], use_noise=True, activation="lrelu"
        )
        return EasyDict(common, synthesis_kwargs=EasyDict(synthesis))
    return EasyDict(common, **synthesis, fused_modconv_default="inference_only")


def generator_object(
    weights, config, layout="ada", module_src="import torch\n"
) -> PersistentObject:
    tree = _tree(weights)
    generator = _to_persistent("G", tree, module_src)
    generator.meta["class_name"] = "Generator"
    generator.meta["state"]["_init_kwargs"] = init_kwargs(config, layout)
    return generator


def snapshot(weights, config, layout="ada", module_src="import torch\n", extra=None) -> dict:
    """A training snapshot: G (different weights), D, G_ema (the real ones), augment_pipe."""
    zeros = {name: np.zeros_like(value) for name, value in weights.items()}
    discriminator = persistent(
        "Discriminator", module_state(parameters={"b4.fc.weight": torch.ones(2, 2)})
    )
    data = {
        "G": generator_object(zeros, config, layout, module_src),
        "D": discriminator,
        "G_ema": generator_object(weights, config, layout, module_src),
        "augment_pipe": persistent("AugmentPipe", module_state(buffers={"p": torch.zeros([])})),
        "training_set_kwargs": EasyDict(path="ffhq.zip", resolution=config["img_resolution"]),
    }
    data.update(extra or {})
    return data


def tf_era_networks(weights, config, module_src="import tensorflow\n") -> tuple:
    """``(G, D, Gs)`` as a TF-era config-f pickle holds them, built from PyTorch weights.

    Written from the published TF variable names: kernels ``[kh, kw, in, out]``, dense
    weights ``[in, out]``, modulation biases without the +1, flipped up-sampling kernels.
    """
    kwargs = config["init_kwargs"]
    synthesis_kwargs = kwargs["synthesis_kwargs"]
    static = {
        "num_channels": kwargs["img_channels"],
        "resolution": kwargs["img_resolution"],
        "label_size": 0,
        "latent_size": kwargs["z_dim"],
        "dlatent_size": kwargs["w_dim"],
        "mapping_layers": kwargs["mapping_kwargs"]["num_layers"],
        "fmap_base": synthesis_kwargs["channel_base"] // 2,
        "fmap_max": synthesis_kwargs["channel_max"],
        "truncation_psi": 0.5,
    }
    mapping, synthesis = {}, {"lod": np.float32(0)}
    for name, value in weights.items():
        parts = name.split(".")
        if parts[0] == "mapping" and parts[1].startswith("fc"):
            mapping[f"Dense{parts[1][2:]}/{parts[2]}"] = value.T if parts[2] == "weight" else value
        if parts[0] != "synthesis" or parts[-1] == "resample_filter":
            continue
        res = int(parts[1][1:])
        block = f"{res}x{res}"
        if parts[2] == "const":
            synthesis[f"{block}/Const/const"] = value[None]
            continue
        layer = {"conv0": "Conv0_up", "conv1": "Conv" if res == 4 else "Conv1", "torgb": "ToRGB"}[
            parts[2]
        ]
        leaf = ".".join(parts[3:])
        if leaf == "noise_const":
            index = 0 if res == 4 else 2 * int(np.log2(res)) - (5 if parts[2] == "conv0" else 4)
            synthesis[f"noise{index}"] = value[None, None]
        elif leaf == "weight":
            kernel = value.transpose(2, 3, 1, 0)
            synthesis[f"{block}/{layer}/weight"] = (
                kernel[::-1, ::-1] if layer == "Conv0_up" else kernel
            )
        elif leaf == "affine.weight":
            synthesis[f"{block}/{layer}/mod_weight"] = value.T
        elif leaf == "affine.bias":
            synthesis[f"{block}/{layer}/mod_bias"] = value - 1
        else:
            synthesis[f"{block}/{layer}/{leaf}"] = value

    def generator(name, scale):
        def scaled(variables):
            return {key: value * scale for key, value in variables.items()}

        components = {
            "mapping": Network("G_mapping", static, scaled(mapping), module_src=module_src),
            "synthesis": Network("G_synthesis", static, scaled(synthesis), module_src=module_src),
        }
        avg = {"dlatent_avg": weights["mapping.w_avg"] * scale}
        return Network(name, static, avg, components, module_src)

    discriminator = Network("D", static, {"Output/weight": np.ones((4, 1), np.float32)})
    return (generator("G", np.float32(0)), discriminator, generator("Gs", np.float32(1)))


def write_pickle(path, obj, protocol: int = 3) -> None:
    """Pickle ``obj`` with the fake NVIDIA modules in place (protocol 3: Python 3.7 era files)."""
    with nvidia_modules():
        data = pickle.dumps(obj, protocol=protocol)
    with open(path, "wb") as file:
        file.write(data)


def pickle_globals(path) -> set[str]:
    """``module.name`` of every global a protocol <= 3 pickle names (for checking realism)."""
    import pickletools

    with open(path, "rb") as file:
        return {
            arg.replace(" ", ".")
            for opcode, arg, _ in pickletools.genops(file)
            if opcode.name == "GLOBAL"
        }
