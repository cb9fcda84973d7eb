"""Generator constructor arguments in one layout, every value inside a stated bound.

Files name their config in several layouts (stylegan2-ada-pytorch nests
``synthesis_kwargs``; the stylegan3 repository is flat; our JSON wraps it in
``{"format", "config"}``). :func:`normalise_config` gives the one flat layout
:class:`~.network.Generator` takes and refuses any value outside :data:`BOUNDS`, so a
config cannot ask for a network larger than any real StyleGAN2.
"""

from __future__ import annotations

import math
import re
from typing import Any

from napari_freedrag.errors import ModelError
from napari_freedrag.io import jsonable

GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_SYNTHESIS_DEFAULTS = {
    "channel_base": 32768,
    "channel_max": 512,
    "num_fp16_res": 0,
    "conv_clamp": None,
}
_MAPPING_DEFAULTS = {"num_layers": 8}
#: Options that only change speed on NVIDIA's CUDA kernels, not the result.
_SPEED_ONLY_OPTIONS = ("fused_modconv_default", "fp16_channels_last")
#: Derived facts some JSON files carry next to the constructor arguments.
_DERIVED_FACTS = ("num_ws", "block_resolutions", "block_channels", "class_name")
#: The most values a config may hold (real ones hold about 20).
MAX_CONFIG_VALUES = 1000
MAX_RESOLUTION = 2048

#: Inclusive integer bounds of every size a config sets (``None`` allowed where marked).
BOUNDS: dict[str, tuple[int, int, bool]] = {
    "z_dim": (1, 4096, False),
    "c_dim": (0, 4096, False),
    "w_dim": (1, 4096, False),
    "img_channels": (1, 4, False),
    "channel_base": (1, 2**20, False),
    "channel_max": (1, 2048, False),
    "num_fp16_res": (0, 12, False),
    "num_layers": (1, 32, False),
    "embed_features": (1, 4096, True),
    "layer_features": (1, 4096, True),
}
#: Bounds of the real-valued options (``None`` allowed for ``conv_clamp``).
REAL_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "conv_clamp": (0.0, 1e6, True),
    "lr_multiplier": (1e-6, 1e3, False),
    "w_avg_beta": (0.0, 1.0, False),
}

#: Constructor options that exist only in the alias-free (StyleGAN3) generator.
STYLEGAN3_OPTIONS = (
    "magnitude_ema_beta",
    "conv_kernel",
    "use_radial_filters",
    "first_cutoff",
    "first_stopband",
    "margin_size",
    "output_scale",
    "num_critical",
)
_STYLEGAN3_LAYER = re.compile(r"^L\d+_\d+_\d+$")
STYLEGAN3_MESSAGE = (
    "{name} is a StyleGAN3 (alias-free) network: StyleGAN3 networks are not supported yet; "
    "use a StyleGAN2 checkpoint (e.g. stylegan2-ffhq-512x512.pkl)"
)


def is_stylegan3(state_dict_names, config: dict) -> bool:
    """True for alias-free networks, recognised by their options or their layer names."""
    if any(key in config for key in STYLEGAN3_OPTIONS):
        return True
    for name in state_dict_names:
        parts = name.split(".")
        if (
            len(parts) > 1
            and parts[0] == "synthesis"
            and (parts[1] == "input" or _STYLEGAN3_LAYER.match(parts[1]))
        ):
            return True
    return False


def plain_config(raw: Any, source: str) -> Any:
    """A config read from a file as plain JSON values, refused when implausibly large."""
    try:
        return jsonable(raw, limit=MAX_CONFIG_VALUES)
    except (ValueError, RecursionError):
        raise ModelError(
            f"{source}: the generator config holds more than {MAX_CONFIG_VALUES} values "
            "or is nested too deeply; not a StyleGAN2 config"
        ) from None


def normalise_config(raw: dict, source: str = "the checkpoint") -> dict:
    """Constructor kwargs in the one layout :class:`Generator` takes, from any file layout.

    Accepts stylegan2-ada-pytorch (nested ``synthesis_kwargs``), stylegan3-repository
    (flat, with ``fused_modconv_default``), our own JSON (``{"format", "config"}``) and the
    fixtures' JSON (``{"init_kwargs": ...}`` plus derived facts).
    """
    raw = plain_config(raw, source)
    if not isinstance(raw, dict):
        raise ModelError(
            f"{source}: the generator config is a {type(raw).__name__}, not a JSON object"
        )
    if isinstance(raw.get("config"), dict):
        raw = raw["config"]
    elif isinstance(raw.get("init_kwargs"), dict):
        raw = raw["init_kwargs"]
    if any(key in raw for key in STYLEGAN3_OPTIONS):
        raise ModelError(STYLEGAN3_MESSAGE.format(name=source))
    missing = [key for key in GENERATOR_ARGS if key not in raw and key != "c_dim"]
    if missing:
        raise ModelError(f"{source}: the generator config lacks {', '.join(missing)}")
    config: dict[str, Any] = {key: raw.get(key, 0) for key in GENERATOR_ARGS}
    resolution = config["img_resolution"]
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, int)
        or not 4 <= resolution <= MAX_RESOLUTION
        or resolution & (resolution - 1)
    ):
        raise ModelError(
            f"{source}: img_resolution must be a power of two from 4 to {MAX_RESOLUTION}, "
            f"not {resolution!r}"
        )
    mapping = raw.get("mapping_kwargs") or {}
    if not isinstance(mapping, dict):
        raise ModelError(f"{source}: mapping_kwargs must be a JSON object")
    config["mapping_kwargs"] = {**_MAPPING_DEFAULTS, **mapping}
    synthesis = raw.get("synthesis_kwargs") or {}
    if not isinstance(synthesis, dict):
        raise ModelError(f"{source}: synthesis_kwargs must be a JSON object")
    synthesis = dict(synthesis)
    for key, value in raw.items():
        if key not in (*GENERATOR_ARGS, "mapping_kwargs", "synthesis_kwargs", *_DERIVED_FACTS):
            synthesis.setdefault(key, value)
    for key in _SPEED_ONLY_OPTIONS:
        synthesis.pop(key, None)
    config.update({**_SYNTHESIS_DEFAULTS, **synthesis})
    for options in (config, config["mapping_kwargs"]):
        _check_bounds(options, source)
    if config["channel_base"] < resolution:  # NVIDIA's min(channel_base // res, channel_max)
        raise ModelError(
            f"{source}: generator config channel_base {config['channel_base']} leaves no "
            f"channels at {resolution} px (it must be at least img_resolution)"
        )
    return config


def _check_bounds(options: dict, source: str) -> None:
    for key, value in options.items():
        if key in BOUNDS:
            low, high, optional = BOUNDS[key]
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ModelError(
                    f"{source}: generator config {key} must be an integer from {low} to "
                    f"{high}, not {value!r}"
                )
        elif key in REAL_BOUNDS:
            low, high, optional = REAL_BOUNDS[key]
            if value is None and optional:
                continue
            number = (
                value if isinstance(value, int | float) and not isinstance(value, bool) else None
            )
            if number is None or not math.isfinite(number) or not low <= number <= high:
                raise ModelError(
                    f"{source}: generator config {key} must be a number from {low:g} to "
                    f"{high:g}, not {value!r}"
                )
