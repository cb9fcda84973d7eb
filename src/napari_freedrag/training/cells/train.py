"""Train the bundled ``cells`` StyleGAN2 on the procedural dataset.

The generator is the project's own :class:`~napari_freedrag.models.stylegan2.network.Generator`
(NVIDIA's architecture and state_dict names), so the exported ``G_ema`` loads through the
same code path as any other checkpoint. Training follows StyleGAN2: non-saturating
logistic loss, lazy R1 on reals, an EMA of the generator, optional style mixing and
path-length regularisation. Runs on CPU or CUDA, is seeded, and resumes from the
snapshot it writes every few minutes.

    napari-freedrag train-cells --out runs/cells --minutes 85
    python -m napari_freedrag.training.cells.train --out runs/cells --resume runs/cells/snapshot.pt
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_freedrag.errors import DivergedError, InputError
from napari_freedrag.training.cells.dataset import (
    MIN_SEMI_MINOR,
    cached_images,
    check_min_semi_minor,
)
from napari_freedrag.training.cells.quality import generate_images, tile
from napari_freedrag.training.cells.state import (
    TrainConfig,
    TrainState,
    apply_learning_rates,
    build_state,
    export_generator,
    grow_snapshot,
    load_snapshot,
    save_snapshot,
    state_from_export,
)


def _latents(state: TrainState, batch: int, device) -> torch.Tensor:
    """W+ for a batch, with style mixing at a random crossover layer when enabled."""
    cfg, G = state.config, state.G
    z = torch.randn(batch, cfg.z_dim, device=device)
    ws = G.mapping(z, None)
    if cfg.style_mixing > 0 and torch.rand(()) < cfg.style_mixing:
        cutoff = int(torch.randint(1, ws.shape[1], ()))
        ws2 = G.mapping(torch.randn_like(z), None)
        ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
    return ws


def train_step(state: TrainState, reals: torch.Tensor) -> dict:
    """One generator and one discriminator update (plus lazy R1 / path length). The logged
    values stay 0-dim tensors: reading them waits for the device, so :func:`train` reads
    them only when it logs or snapshots."""
    cfg, G, D = state.config, state.G, state.D
    device, batch = reals.device, reals.shape[0]
    logs = {}

    # Generator: non-saturating logistic loss.
    G.requires_grad_(True)
    D.requires_grad_(False)
    ws = _latents(state, batch, device)
    fake_logits = D(translate(G.synthesis(ws, noise_mode="random"), cfg.augment_translation))
    loss_G = F.softplus(-fake_logits).mean()
    state.opt_G.zero_grad(set_to_none=True)
    loss_G.backward()
    logs["loss_G"] = loss_G.detach()
    if cfg.pl_weight and state.iteration % cfg.pl_interval == 0:
        logs["pl"] = _path_length_step(state, max(batch // 2, 1), device)
    state.opt_G.step()
    logs.update(discriminator_step(state, reals, state.iteration % cfg.r1_interval == 0))
    _update_ema(state, batch)
    state.iteration += 1
    state.nimg += batch
    return logs


def discriminator_step(state: TrainState, reals: torch.Tensor, with_r1: bool) -> dict:
    """Logistic loss on fakes and reals, lazy R1 on reals (when ``with_r1``); G unchanged."""
    cfg, G, D = state.config, state.G, state.D
    device, batch = reals.device, reals.shape[0]
    logs = {}
    G.requires_grad_(False)
    D.requires_grad_(True)
    with torch.no_grad():
        fakes = G.synthesis(_latents(state, batch, device), noise_mode="random")
    do_r1 = cfg.r1_gamma > 0 and with_r1
    reals = reals.detach().requires_grad_(do_r1)
    real_logits = D(translate(reals, cfg.augment_translation))
    fake_logits_d = D(translate(fakes, cfg.augment_translation))
    loss_D = F.softplus(fake_logits_d).mean() + F.softplus(-real_logits).mean()
    total = loss_D
    if do_r1:
        (grad,) = torch.autograd.grad(real_logits.sum(), reals, create_graph=True)
        r1 = grad.square().sum(dim=(1, 2, 3)).mean()
        total = total + r1 * (cfg.r1_gamma / 2) * cfg.r1_interval
        logs["r1"] = r1.detach()
    state.opt_D.zero_grad(set_to_none=True)
    total.backward()
    state.opt_D.step()
    logs["loss_D"] = loss_D.detach()
    logs["real_logit"] = real_logits.mean().detach()
    logs["fake_logit"] = fake_logits_d.mean().detach()
    return logs


def _path_length_step(state: TrainState, batch: int, device) -> torch.Tensor:
    """Accumulate StyleGAN2's path-length penalty into G's gradients; returns the length."""
    cfg = state.config
    lengths = _path_lengths(state, batch, device, create_graph=True)
    state.pl_mean = state.pl_mean.to(device).lerp(lengths.mean().detach(), 0.01)
    penalty = (lengths - state.pl_mean).square().mean() * cfg.pl_weight * cfg.pl_interval
    penalty.backward()
    return lengths.mean().detach()


def _path_lengths(state: TrainState, batch: int, device, create_graph: bool) -> torch.Tensor:
    """Per-sample Jacobian norms |J^T y| of synthesis w.r.t. W+, y a random image."""
    ws = _latents(state, batch, device)
    if not ws.requires_grad:
        ws.requires_grad_(True)
    img = state.G.synthesis(ws, noise_mode="random")
    noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=create_graph)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def warm_up_discriminator(state: TrainState, images: np.ndarray, iterations: int) -> None:
    """Train a new D alone against a trained G, so G's first updates get a useful signal.
    Not counted in ``iteration`` or ``nimg``."""
    device = next(state.G.parameters()).device
    rng = np.random.default_rng(state.config.seed + 7)
    for step in range(1, iterations + 1):
        index = rng.integers(0, len(images), size=state.config.batch)
        with_r1 = step % state.config.r1_interval == 0
        logs = discriminator_step(state, _to_batch(images, index, device), with_r1)
        if step % 10 == 0:
            print(
                f"D warm-up {step}/{iterations} "
                + " ".join(f"{k} {v:.3f}" for k, v in logs.items()),
                flush=True,
            )


def translate(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Shift each image by a random whole number of pixels (up to ``fraction`` of its size),
    filling with its own border (the dark background). Differentiable, so it applies to
    fakes in G's step and to reals under R1 alike."""
    n, _, h, w = x.shape
    pad = int(round(h * fraction))
    if pad == 0:
        return x
    shifts = torch.randint(-pad, pad + 1, (n, 2), device=x.device)
    padded = F.pad(x, [pad, pad, pad, pad], mode="replicate")
    rows = torch.arange(h, device=x.device)[None, :] + pad - shifts[:, :1]
    cols = torch.arange(w, device=x.device)[None, :] + pad - shifts[:, 1:]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@torch.no_grad()
def _update_ema(state: TrainState, batch: int) -> None:
    cfg = state.config
    ema_nimg = cfg.ema_kimg * 1000
    if cfg.ema_rampup:
        ema_nimg = min(ema_nimg, state.nimg * cfg.ema_rampup)
    beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
    for p_ema, p in zip(state.G_ema.parameters(), state.G.parameters(), strict=True):
        p_ema.lerp_(p, 1 - beta)
    for b_ema, b in zip(state.G_ema.buffers(), state.G.buffers(), strict=True):
        b_ema.copy_(b)


@torch.no_grad()
def sample_grid(G, rows: int = 4, cols: int = 8, seed: int = 0, truncation: float = 1.0):
    """A ``(rows*R, cols*R, 3)`` uint8 grid of samples from fixed seeds."""
    return tile(generate_images(G, rows * cols, seed, truncation), rows, cols)


def images_to_tensor(images: np.ndarray, device="cpu") -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 images as the ``(N, 3, H, W)`` [-1, 1] tensor G and D use."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2) / 127.5 - 1


def _to_batch(images: np.ndarray, index: np.ndarray, device) -> torch.Tensor:
    x = images_to_tensor(images[index], device)
    flip = torch.rand(x.shape[0], device=device) < 0.5  # cells have no handedness
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def train(
    state: TrainState,
    images: np.ndarray,
    out: Path,
    *,
    kimg: float,
    minutes: float | None,
    snapshot_minutes: float = 5.0,
    log_every: int = 10,
) -> TrainState:
    """Train until ``kimg`` images in total or ``minutes`` of this run have been spent."""
    from skimage.io import imsave

    device = next(state.G.parameters()).device
    rng = np.random.default_rng(state.config.seed + state.iteration)
    start = last_snapshot = last_log = time.time()
    seconds_at_start, iter_at_log = state.seconds, state.iteration
    logs = {}  # the lazy regularisers' last values stay in the log lines
    while state.nimg < kimg * 1000:
        index = rng.integers(0, len(images), size=state.config.batch)
        logs.update(train_step(state, _to_batch(images, index, device)))
        now = time.time()
        state.seconds = seconds_at_start + (now - start)
        due_log = state.iteration % log_every == 0
        over_time = minutes is not None and now - start >= minutes * 60
        due_snapshot = now - last_snapshot >= snapshot_minutes * 60 or over_time
        if due_log or due_snapshot:
            values = _finite_values(state, logs)
        if due_log:
            per_iter = (now - last_log) / max(state.iteration - iter_at_log, 1)
            last_log, iter_at_log = now, state.iteration
            print(
                f"it {state.iteration} kimg {state.nimg / 1000:.2f} {per_iter:.2f} s/it "
                + " ".join(f"{k} {v:.3f}" for k, v in values.items()),
                flush=True,
            )
        if due_snapshot:
            _write_outputs(state, out, imsave)
            last_snapshot = now
        if over_time:
            break
    else:
        _finite_values(state, logs)
        _write_outputs(state, out, imsave)
    return state


def _finite_values(state: TrainState, logs: dict) -> dict[str, float]:
    """The logged values as floats, or a clear stop (before any snapshot) if one is not
    finite: a snapshot written after a divergence would be worth nothing."""
    values = {key: float(value) for key, value in logs.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise DivergedError(
            f"training diverged by iteration {state.iteration} ({values}): resume from the "
            "last snapshot.pt with a lower rate or a stronger R1 (--change lr=... or "
            "--change r1_gamma=...)"
        )
    return values


def _write_outputs(state: TrainState, out: Path, imsave) -> None:
    """Snapshot to resume from, plus every export kept by kimg (GAN quality is not monotone:
    the best one is picked afterwards) and the latest as ``cells.safetensors``."""
    save_snapshot(state, out / "snapshot.pt")
    stem = out / "cells"
    exported = export_generator(state, out / f"cells-{state.nimg // 1000:04d}kimg")
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(exported.with_suffix(suffix), stem.with_suffix(suffix))
    imsave(
        out / f"samples-{state.nimg // 1000:06d}kimg.png",
        sample_grid(state.G_ema),
        check_contrast=False,
    )
    print(f"snapshot at kimg {state.nimg / 1000:.2f} -> {stem}.safetensors", flush=True)


#: What a resumed run may change: loss weights, the learning rate and schedules, not the
#: networks' shapes or the data (those would not fit the snapshot's weights or its kimg
#: count; --grow-from widens the networks).
RESUMABLE_CHANGES = (
    "lr",
    "d_lr_ratio",
    "r1_gamma",
    "style_mixing",
    "pl_weight",
    "augment_translation",
    "ema_kimg",
    "ema_rampup",
    "min_semi_minor",  # the dataset variant: fine-tune a run on wider narrow cells
)


def parse_change(text: str) -> tuple[str, float]:
    """``"pl_weight=0"`` -> ``("pl_weight", 0.0)``; anything else is a one-line error."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or key not in RESUMABLE_CHANGES:
        raise InputError(f"--change {text!r}: use KEY=VALUE with KEY one of {RESUMABLE_CHANGES}")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number) or number < 0:
        raise InputError(f"--change {text!r}: the value must be a number >= 0")
    if key == "min_semi_minor":
        try:
            check_min_semi_minor(number)
        except ValueError as exc:
            raise InputError(f"--change {text!r}: {exc}") from None
    return key, number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="napari-freedrag train-cells",
        description="Train the bundled 'cells' StyleGAN2 on procedural microscopy cells.",
    )
    defaults = TrainConfig()
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--kimg", type=float, default=1000.0, help="stop after this many kimg")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this wall time")
    parser.add_argument("--snapshot-minutes", type=float, default=5.0)
    parser.add_argument("--resume", type=Path, default=None, help="snapshot.pt to continue")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--grow-from",
        type=Path,
        default=None,
        help="continue this snapshot.pt with the wider --channel-base / --channel-max given",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start G from this exported .safetensors, with a new D",
    )
    parser.add_argument(
        "--compact-out",
        type=Path,
        default=None,
        help="at the end, also write a compact snapshot (no optimiser moments) here",
    )
    parser.add_argument(
        "--change",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"with --resume: change one of {', '.join(RESUMABLE_CHANGES)} from here on",
    )
    parser.add_argument(
        "--d-warmup",
        type=int,
        default=0,
        help="with --init-from: D-only iterations before training",
    )
    for name in (
        "resolution",
        "batch",
        "z_dim",
        "w_dim",
        "mapping_layers",
        "channel_base",
        "channel_max",
        "r1_gamma",
        "style_mixing",
        "pl_weight",
        "pl_interval",
        "lr",
        "d_lr_ratio",
        "dataset_size",
        "seed",
        "min_semi_minor",
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(getattr(defaults, name)),
            default=getattr(defaults, name),
        )
    args = parser.parse_args(argv)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    continued = args.resume or args.grow_from
    if args.resume and args.grow_from:
        parser.error("--resume and --grow-from both name a snapshot: give one")
    if args.change and continued is None:
        parser.error(
            "--change needs --resume or --grow-from (a new run takes --pl-weight and the like)"
        )
    try:
        changes = [parse_change(text) for text in args.change]  # all checked before any work
        check_min_semi_minor(args.min_semi_minor)
    except (InputError, ValueError) as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    if continued is not None:
        if args.resume is not None:
            state = load_snapshot(args.resume, device)
        else:
            state = grow_snapshot(args.grow_from, args.channel_base, args.channel_max, device)
        print(f"resumed at iteration {state.iteration}, kimg {state.nimg / 1000:.2f}", flush=True)
        for key, value in changes:
            print(f"{key}: {getattr(state.config, key)} -> {value}", flush=True)
            setattr(state.config, key, value)
        apply_learning_rates(state)
    else:
        cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(defaults) if hasattr(args, k)})
        if args.init_from is not None:
            state = state_from_export(cfg, args.init_from, device)
            # Path-length regularisation of a trained G starts at its own length, so that
            # turning it on does not first shrink every path towards zero.
            state.pl_mean = _path_lengths(state, cfg.batch, device, False).mean().detach()
        else:
            state = build_state(cfg, device)
    cfg = state.config
    (args.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    variant = "" if cfg.min_semi_minor == MIN_SEMI_MINOR else f"-minor{cfg.min_semi_minor:g}"
    cache = args.out / f"dataset-{cfg.dataset_size}-{cfg.resolution}px-seed{cfg.seed}{variant}.npy"
    images = cached_images(cache, cfg.dataset_size, cfg.seed, cfg.resolution, cfg.min_semi_minor)
    n_g = sum(p.numel() for p in state.G.parameters())
    n_d = sum(p.numel() for p in state.D.parameters())
    print(
        f"device {device}, G {n_g / 1e6:.2f} M, D {n_d / 1e6:.2f} M params, "
        f"{len(images)} training images, config {asdict(cfg)}",
        flush=True,
    )
    if args.init_from is not None and continued is None:
        warm_up_discriminator(state, images, args.d_warmup)
    train(
        state,
        images,
        args.out,
        kimg=args.kimg,
        minutes=args.minutes,
        snapshot_minutes=args.snapshot_minutes,
    )
    if args.compact_out is not None:
        save_snapshot(state, args.compact_out, compact=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
