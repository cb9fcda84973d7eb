"""What a cells training run is made of, and its files: the configuration, the networks
and optimisers, resumable snapshots, and exports in the project's checkpoint format
(which :func:`state_from_export` can also start a new run from)."""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from napari_freedrag.errors import InputError
from napari_freedrag.training.cells.dataset import MIN_SEMI_MINOR
from napari_freedrag.training.cells.discriminator import Discriminator


@dataclass
class TrainConfig:
    resolution: int = 64
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 2
    channel_base: int = 2048
    channel_max: int = 128
    # Batch 16 with lr 0.0025 collapsed to one central blob by 16 kimg; StyleGAN2-ADA's
    # smallest batch at 64 px is 32.
    batch: int = 32
    lr: float = 0.002
    # D's learning rate as a multiple of lr (1: StyleGAN2's single rate). A continued run
    # whose D sits near chance can be given a faster D with --change d_lr_ratio=...
    d_lr_ratio: float = 1.0
    # StyleGAN2-ADA's heuristic (0.0002 * res^2 / batch = 0.05 at 64 px, batch 16) let D
    # overpower G within 15 kimg here (real logits ~8, G collapsed to black).
    r1_gamma: float = 1.0
    r1_interval: int = 16
    style_mixing: float = 0.0  # probability; 0.9 is StyleGAN2's value, off for speed
    pl_weight: float = 0.0  # path-length regularisation weight; 2.0 in StyleGAN2, off
    pl_interval: int = 4
    # DiffAugment-style random translation (up to this fraction of the size) of everything
    # D sees, reals and fakes alike. Without it D won within 15-30 kimg in all three
    # earlier runs and G collapsed (see docs/cells-model.md).
    augment_translation: float = 0.125
    ema_kimg: float = 5.0
    ema_rampup: float = 0.05
    dataset_size: int = 20000
    seed: int = 0
    # The dataset variant (dataset.MIN_SEMI_MINOR draws the original images).
    min_semi_minor: float = MIN_SEMI_MINOR

    def generator_kwargs(self) -> dict:
        """Constructor kwargs of the generator, also the exported ``.json``."""
        return {
            "z_dim": self.z_dim,
            "c_dim": 0,
            "w_dim": self.w_dim,
            "img_resolution": self.resolution,
            "img_channels": 3,
            "mapping_kwargs": {"num_layers": self.mapping_layers},
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "num_fp16_res": 0,
            "conv_clamp": 256,
        }


@dataclass
class TrainState:
    """Everything a snapshot restores; ``iteration`` and ``nimg`` continue across resumes."""

    config: TrainConfig
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    iteration: int = 0
    nimg: int = 0
    pl_mean: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    seconds: float = 0.0


def _lazy_ratio(interval: int) -> float:
    """StyleGAN2's correction of lr and betas for a regulariser run every ``interval`` steps."""
    return interval / (interval + 1) if interval else 1.0


def _lazy_intervals(cfg: TrainConfig) -> dict[str, int]:
    """Each optimiser's lazy-regulariser interval (0: none): path length for G, R1 for D."""
    return {"opt_G": cfg.pl_interval if cfg.pl_weight else 0, "opt_D": cfg.r1_interval}


def _base_rates(cfg: TrainConfig) -> dict[str, float]:
    """Each optimiser's learning rate before the lazy-regulariser correction."""
    return {"opt_G": cfg.lr, "opt_D": cfg.lr * cfg.d_lr_ratio}


def _lazy_adam(params, lr: float, interval: int) -> torch.optim.Adam:
    ratio = _lazy_ratio(interval)
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)


def apply_learning_rates(state: TrainState) -> None:
    """Run both optimisers at the config's rates from here on (a loaded snapshot's
    optimiser state carries the rates it was saved with), with the lazy-regulariser
    correction of the config's intervals (a regulariser turned off drops it)."""
    cfg = state.config
    rates = _base_rates(cfg)
    for name, interval in _lazy_intervals(cfg).items():
        ratio = _lazy_ratio(interval)
        for group in getattr(state, name).param_groups:
            group["lr"], group["betas"] = rates[name] * ratio, (0.0, 0.99**ratio)


def build_state(cfg: TrainConfig, device: torch.device) -> TrainState:
    from napari_freedrag.models.stylegan2.network import Generator

    torch.manual_seed(cfg.seed)
    G = Generator(**cfg.generator_kwargs()).to(device).train()
    D = Discriminator(cfg.resolution, 3, cfg.channel_base, cfg.channel_max).to(device).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    intervals, rates = _lazy_intervals(cfg), _base_rates(cfg)
    return TrainState(
        config=cfg,
        G=G,
        D=D,
        G_ema=G_ema,
        opt_G=_lazy_adam(G.parameters(), rates["opt_G"], intervals["opt_G"]),
        opt_D=_lazy_adam(D.parameters(), rates["opt_D"], intervals["opt_D"]),
    )


@torch.no_grad()
def set_w_avg(G, count: int = 4096, seed: int = 123) -> None:
    """Store the mean W in ``mapping.w_avg`` so truncation pulls towards the real centre."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(count, G.z_dim, generator=gen).to(G.mapping.w_avg.device)
    G.mapping.w_avg.copy_(G.mapping(z, None)[:, 0].mean(dim=0))


def save_snapshot(state: TrainState, path: Path, compact: bool = False) -> None:
    """Everything needed to resume, written atomically. ``compact`` leaves out the Adam
    moments (half the file; a resume re-estimates them within ~100 iterations), for a
    snapshot small enough to commit."""
    payload = {
        "config": asdict(state.config),
        "G": state.G.state_dict(),
        "D": state.D.state_dict(),
        "G_ema": state.G_ema.state_dict(),
        "opt_G": state.opt_G.state_dict(),
        "opt_D": state.opt_D.state_dict(),
        "iteration": state.iteration,
        "nimg": state.nimg,
        "pl_mean": state.pl_mean.cpu(),
        "seconds": state.seconds,
        "torch_rng": torch.get_rng_state(),
    }
    if compact:
        del payload["opt_G"], payload["opt_D"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


#: What ``torch.load(weights_only=True)`` raises on a file it cannot read as tensors:
#: pickle's refusals, a broken zip or a stray byte stream.
_NOT_A_SNAPSHOT = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, IndexError, KeyError)


def _read_snapshot(path: Path, device: torch.device) -> dict:
    """A snapshot's payload (tensors and plain values only: no code runs), or one clear
    error for a missing file or one that is not a training snapshot."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such snapshot file")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except _NOT_A_SNAPSHOT as exc:
        raise InputError(f"{path} is not a training snapshot ({type(exc).__name__})") from None
    missing = {"config", "G", "D", "G_ema", "iteration", "nimg"} - set(
        payload if isinstance(payload, dict) else ()
    )
    if missing:
        raise InputError(f"{path} is not a training snapshot (no {', '.join(sorted(missing))})")
    return payload


def _restore_progress(state: TrainState, payload: dict) -> None:
    """Counters, path-length mean and RNG: what continues a run, whatever its networks."""
    state.iteration, state.nimg = payload["iteration"], payload["nimg"]
    state.pl_mean, state.seconds = payload["pl_mean"], payload["seconds"]
    torch.set_rng_state(payload["torch_rng"])


def load_snapshot(path: Path, device: torch.device) -> TrainState:
    payload = _read_snapshot(path, device)
    state = build_state(TrainConfig(**payload["config"]), device)
    for name in ("G", "D", "G_ema", "opt_G", "opt_D"):
        if name in payload:  # a compact snapshot has no optimiser moments
            getattr(state, name).load_state_dict(payload[name])
    _restore_progress(state, payload)
    return state


def grow_snapshot(
    path: Path, channel_base: int, channel_max: int, device: torch.device
) -> TrainState:
    """A snapshot's run continued with wider networks: the same G, G_ema and D functions
    (see :func:`widen_into`), more channels to learn with, new optimisers; the counters,
    path-length mean and the rest of the config carry over."""
    payload = _read_snapshot(path, device)
    old = TrainConfig(**payload["config"])
    cfg = TrainConfig(**{**asdict(old), "channel_base": channel_base, "channel_max": channel_max})
    state = build_state(cfg, device)
    widths = [(n, p.shape) for n, p in state.G.state_dict().items()]
    if widths == [(n, p.shape) for n, p in payload["G"].items()]:
        raise InputError(
            f"--channel-base {channel_base} --channel-max {channel_max} give the snapshot's "
            "own widths: nothing to grow (use --resume)"
        )
    for name in ("G", "D", "G_ema"):
        widen_into(getattr(state, name), payload[name])
    _restore_progress(state, payload)
    return state


@torch.no_grad()
def widen_into(net: torch.nn.Module, narrow: dict) -> None:
    """Load a narrower copy of ``net``'s weights so that ``net`` computes the same function.

    Each grown weight keeps its fresh initialisation for the new output channels (dim 0)
    and gets zeros where an old output reads a new input channel, so the new channels
    start learning without changing what the old ones compute. The old weights are scaled
    by sqrt(new fan-in / old fan-in): the equalised learning rate divides by the fan-in
    at run time, and demodulated convolutions ignore a constant factor anyway.
    """
    for name, target in net.state_dict().items():
        if name not in narrow:
            raise InputError(f"the snapshot has no {name}: it is another architecture")
        source = narrow[name].to(target.device)
        if source.shape == target.shape:
            target.copy_(source)
            continue
        if source.dim() != target.dim() or any(
            s > t for s, t in zip(source.shape, target.shape, strict=True)
        ):
            raise InputError(f"{name}: {tuple(source.shape)} cannot grow to {tuple(target.shape)}")
        old = tuple(slice(0, s) for s in source.shape)
        if target.dim() >= 2:
            target[: source.shape[0], source.shape[1] :] = 0
            source = source * math.sqrt(target.shape[1] / source.shape[1])
        target[old] = source


def export_generator(state: TrainState, stem: Path) -> Path:
    """Write ``G_ema`` as ``stem.safetensors`` + ``stem.json``, the project's checkpoint format,
    with ``w_avg`` set and its activations scaled for FreeDrag's thresholds (feature_scale)."""
    from napari_freedrag.models.stylegan2.checkpoint import save_checkpoint
    from napari_freedrag.training.cells.feature_scale import SHIFT_FEATURE_PX

    G = copy.deepcopy(state.G_ema).cpu()
    set_w_avg(G)
    config = state.config.generator_kwargs()
    scale = _calibrate(G, config)
    info = {
        "model": "cells",
        "kimg": round(state.nimg / 1000, 2),
        "iterations": state.iteration,
        "training_seconds": round(state.seconds),
        "training_config": asdict(state.config),
        "feature_scale": scale,
        "calibration_shift_px": SHIFT_FEATURE_PX,
    }
    return save_checkpoint(stem, config, G.state_dict(), info=info)


def export_info(path: Path) -> dict:
    """The provenance an export's ``.json`` carries (kimg, feature scale, ...)."""
    return json.loads(Path(path).with_suffix(".json").read_text()).get("info", {})


def trained_min_semi_minor(paths) -> float:
    """The dataset variant the exports were trained on, so that they are measured against
    it (exports older than the variants: the original dataset). Exports of different
    variants cannot share one dataset sample: that is an input error."""
    variants = {
        float(export_info(p).get("training_config", {}).get("min_semi_minor", MIN_SEMI_MINOR))
        for p in paths
    }
    if len(variants) > 1:
        raise InputError(
            f"these exports were trained on different datasets (min_semi_minor "
            f"{sorted(variants)}): measure each variant's exports separately"
        )
    return variants.pop() if variants else MIN_SEMI_MINOR


def recalibrate_export(path: Path, stem: Path) -> Path:
    """``path`` (an export) written to ``stem`` with its feature scale chosen by the current
    calibration rule; the image it draws is unchanged (the rescaling is exact)."""
    from napari_freedrag.models.stylegan2.checkpoint import (
        build_generator,
        load_checkpoint,
        save_checkpoint,
    )
    from napari_freedrag.training.cells.feature_scale import SHIFT_FEATURE_PX

    config, state_dict = load_checkpoint(path)
    info = export_info(path)
    G = build_generator(config, state_dict)
    factor = _calibrate(G, config)
    before = float(info.get("feature_scale", 1.0))
    info.update(
        feature_scale=before * factor,
        calibration_shift_px=SHIFT_FEATURE_PX,
        recalibrated_from={"feature_scale": before, "file": Path(path).name},
    )
    return save_checkpoint(stem, config, G.state_dict(), info=info)


def _calibrate(G, config: dict) -> float:
    """Calibrate ``G`` in place (:func:`feature_scale.calibrate`), its ``conv_clamp`` with
    it (clamp(c*x, c*k) == c*clamp(x, k): still exact); returns the factor."""
    from napari_freedrag.training.cells.feature_scale import calibrate

    scale = calibrate(G)
    if config["conv_clamp"] is not None:
        config["conv_clamp"] *= scale
    return scale


def state_from_export(cfg: TrainConfig, path: Path, device: torch.device) -> TrainState:
    """A fresh training state whose G and G_ema are an exported generator (feature scale
    undone) and whose D and optimisers are new."""
    from napari_freedrag.models.stylegan2.checkpoint import load_checkpoint
    from napari_freedrag.training.cells.feature_scale import rescale_activations

    config, state_dict = load_checkpoint(path)
    wanted = cfg.generator_kwargs()
    if {k: v for k, v in config.items() if k != "conv_clamp"} != {
        k: v for k, v in wanted.items() if k != "conv_clamp"
    }:
        raise InputError(f"{Path(path).name} has another architecture than this training run")
    info = export_info(path)
    state = build_state(cfg, device)
    state.G.load_state_dict(state_dict)
    rescale_activations(state.G, 1.0 / float(info.get("feature_scale", 1.0)))
    state.G_ema.load_state_dict(state.G.state_dict())
    return state
