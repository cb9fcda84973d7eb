"""Project a real image into a StyleGAN2 generator (W, W+, pivotal tuning), offline.

Follows the projector described in the StyleGAN2 paper's appendix: start from the mean
latent, Adam with a learning rate that ramps up briefly and down with a cosine, Gaussian
noise on the latent whose strength falls to zero over the first three quarters of the
run, and per-layer noise maps optimised alongside, kept at zero mean and unit variance
and penalised for spatial autocorrelation at every scale down to 8x8.

The distance is offline: the discriminator's block activations when the checkpoint has
a ``D``, else multi-scale SSIM; both plus a pixel L2 term. Pivotal tuning (PTI) then
fine-tunes a *copy* of the synthesis network around the found latent; the generator the
backend holds and the file on disk are never changed.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from napari_freedrag.errors import DivergedError, InputError, ModelError
from napari_freedrag.models.stylegan2.image_losses import feature_distance, ms_ssim
from napari_freedrag.models.stylegan2.network import to_uint8_image

MODES = ("w", "w+", "pti")
PERCEPTUAL = ("auto", "discriminator", "ssim")
#: Samples of the mapping network that estimate the mean latent and its spread.
W_SAMPLES = 10_000
#: Noise maps are penalised for autocorrelation at each scale down to this size.
NOISE_REG_MIN_SIZE = 8


@dataclass
class ProjectionSettings:
    """How to project. ``steps`` counts latent steps (W+ spends half of them in W first);
    PTI adds ``pti_steps`` generator steps (default: ``steps // 2``)."""

    mode: str = "w+"
    steps: int = 200
    pti_steps: int | None = None
    perceptual: str = "auto"
    lr: float = 0.1
    pti_lr: float = 3e-4
    pixel_weight: float = 1.0
    initial_noise_factor: float = 0.05
    noise_ramp_length: float = 0.75
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    noise_regularize: float = 1e5
    seed: int = 0

    def check(self) -> ProjectionSettings:
        if self.mode not in MODES:
            raise InputError(f"unknown projection mode {self.mode!r}; choose w, w+ or pti")
        if self.perceptual not in PERCEPTUAL:
            raise InputError(
                f"unknown perceptual term {self.perceptual!r}; choose auto, discriminator or ssim"
            )
        for name in ("steps", "pti_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):  # fmt: skip
                raise InputError(f"projection {name} must be a whole number >= 1, got {value!r}")
        if self.pti_steps is None:
            self.pti_steps = max(1, self.steps // 2)
        return self

    @property
    def total_steps(self) -> int:
        return self.steps + (self.pti_steps if self.mode == "pti" else 0)


@dataclass
class ProjectionStep:
    """One optimiser step of a projection: ``phase`` is ``"w"``, ``"w+"`` or ``"pti"``."""

    index: int
    total: int
    phase: str
    loss: float
    losses: dict[str, float]
    seconds: float


@dataclass
class Projection:
    """Where a projection ended: latent, the generator copy that renders it, the image."""

    ws: torch.Tensor
    generator: torch.nn.Module
    image: np.ndarray
    steps: int
    stopped: bool
    perceptual: str
    losses: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


class _Objective:
    """Distance of a generated image to the target: perceptual term plus pixel L2."""

    def __init__(self, target: torch.Tensor, discriminator, perceptual: str, pixel_weight):
        self.target, self.pixel_weight = target, pixel_weight
        if perceptual == "auto":
            perceptual = "discriminator" if discriminator is not None else "ssim"
        if perceptual == "discriminator" and discriminator is None:
            raise ModelError(
                "this checkpoint carries no discriminator (D) for the perceptual term; "
                "project with perceptual='ssim' (or 'auto'), or use a training snapshot with D"
            )
        self.kind = perceptual
        self.discriminator = discriminator if perceptual == "discriminator" else None
        if self.discriminator is not None:
            if discriminator.img_resolution != target.shape[-1] or (
                discriminator.img_channels != target.shape[1]
            ):
                raise ModelError(
                    f"the checkpoint's D reads {discriminator.img_channels}x"
                    f"{discriminator.img_resolution} px images, not the generator's "
                    f"{target.shape[1]}x{target.shape[-1]}; project with perceptual='ssim'"
                )
            with torch.no_grad():
                self.target_features = discriminator.features(target)

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pixel = (image - self.target).square().mean()
        if self.discriminator is not None:
            perceptual = feature_distance(self.discriminator.features(image), self.target_features)
        else:
            perceptual = 1 - ms_ssim(image, self.target)
        return perceptual + self.pixel_weight * pixel, {"perceptual": perceptual, "pixel": pixel}


def _latent_statistics(generator, seed: int) -> tuple[torch.Tensor, float]:
    """Mean W over many mapped samples, and the root-mean-square distance from it."""
    device = generator.mapping.w_avg.device
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(W_SAMPLES, generator.z_dim, generator=rng).to(device)
    c = torch.zeros(W_SAMPLES, generator.c_dim, device=device) if generator.c_dim else None
    with torch.no_grad():
        w = generator.mapping(z, c)[:, :1, :]
    w_avg = w.mean(dim=0, keepdim=True)
    w_std = float(((w - w_avg).square().sum() / W_SAMPLES).sqrt())
    return w_avg, w_std


def _noise_layers(generator) -> list:
    return [layer for _, layer, _ in generator.synthesis.conv_layers() if layer.use_noise]


def noise_regularisation(noises: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation of each noise map at one-pixel shifts, on every 2x pyramid
    level down to 8x8: keeps image content from leaking into the noise."""
    total = torch.zeros((), device=noises[0].device if noises else "cpu")
    for noise in noises:
        level = noise[None, None]
        while True:
            total = total + (level * torch.roll(level, 1, dims=3)).mean().square()
            total = total + (level * torch.roll(level, 1, dims=2)).mean().square()
            if level.shape[2] <= NOISE_REG_MIN_SIZE:
                break
            level = F.avg_pool2d(level, 2)
    return total


def _learning_rate(base: float, progress: float, settings: ProjectionSettings) -> float:
    ramp = min(1.0, (1.0 - progress) / settings.lr_rampdown_length)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, progress / settings.lr_rampup_length)
    return base * ramp


def project_steps(
    generator,
    target: torch.Tensor,
    settings: ProjectionSettings,
    discriminator=None,
    stop: Callable[[], bool] | None = None,
) -> Generator[ProjectionStep, None, Projection]:
    """Project ``target`` (``(1, C, R, R)`` in ``[-1, 1]``); one :class:`ProjectionStep`
    per optimiser step, the :class:`Projection` as return value.

    ``stop`` (a callable or a ``threading.Event``) is checked before every step; stopping
    keeps the latent reached so far usable.
    """
    settings = settings.check()
    objective = _Objective(target, discriminator, settings.perceptual, settings.pixel_weight)
    began = time.perf_counter()
    copy_of_g = copy.deepcopy(generator).eval().requires_grad_(False)
    rng = torch.Generator().manual_seed(settings.seed)  # the caller's RNG stays untouched

    def gaussian(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=rng).to(like.device)

    layers = _noise_layers(copy_of_g)
    for layer in layers:  # the copy's noise maps become optimisable leaves
        layer.noise_const = gaussian(layer.noise_const).requires_grad_(True)
    w_avg, w_std = _latent_statistics(copy_of_g, settings.seed)
    num_ws = copy_of_g.num_ws
    should_stop = getattr(stop, "is_set", stop) or (lambda: False)  # an Event or a callable
    phases = [("w", settings.steps)]
    if settings.mode != "w":
        phases = [("w", settings.steps - settings.steps // 2), ("w+", settings.steps // 2)]
    phases = [(name, count) for name, count in phases if count > 0]
    ws = w_avg.repeat(1, num_ws, 1)
    index, stopped, last = 0, False, {}
    total = settings.total_steps
    for phase, count in phases:
        start = ws[:, :1] if phase == "w" else ws
        latent = start.detach().clone().requires_grad_(True)
        noises = [layer.noise_const for layer in layers]
        optimiser = torch.optim.Adam([latent, *noises], betas=(0.9, 0.999), lr=settings.lr)
        for _ in range(count):
            if should_stop():
                stopped = True
                break
            progress = index / settings.steps  # one schedule across the W and W+ phases
            for group in optimiser.param_groups:
                group["lr"] = _learning_rate(settings.lr, progress, settings)
            scale = w_std * settings.initial_noise_factor
            scale *= max(0.0, 1.0 - progress / settings.noise_ramp_length) ** 2
            noisy = latent + gaussian(latent) * scale
            image = copy_of_g.synthesis(noisy.expand(1, num_ws, -1) if phase == "w" else noisy)
            distance, parts = objective(image)
            regulariser = noise_regularisation(noises)
            loss = distance + settings.noise_regularize * regulariser
            _check_finite(loss, index)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                for noise in noises:
                    noise -= noise.mean()
                    noise *= noise.square().mean().rsqrt()
            index += 1
            last = {k: float(v.detach()) for k, v in {**parts, "noise": regulariser}.items()}
            yield ProjectionStep(index, total, phase, float(loss.detach()), last,
                                 time.perf_counter() - began)  # fmt: skip
        ws = (latent.expand(1, num_ws, -1) if phase == "w" else latent).detach().clone()
        if stopped:
            break
    for layer in layers:
        layer.noise_const = layer.noise_const.detach()
    if settings.mode == "pti" and not stopped:
        tuning = _pivotal_tuning(copy_of_g, ws, objective, settings, index, total, began,
                                 should_stop)  # fmt: skip
        stopped, tuned = yield from tuning
        index += tuned
    copy_of_g.eval().requires_grad_(False)
    with torch.no_grad():
        final_image = copy_of_g.synthesis(ws)
        final, parts = objective(final_image)
    losses = {"loss": float(final), **{k: float(v) for k, v in parts.items()}}
    return Projection(ws, copy_of_g, to_uint8_image(final_image), index, stopped,
                      objective.kind, losses, time.perf_counter() - began)  # fmt: skip


def _pivotal_tuning(generator, ws, objective, settings, index, total, began, should_stop):
    """Fine-tune the copy's synthesis weights so the pivot ``ws`` renders the target."""
    parameters = [p for name, p in generator.synthesis.named_parameters() if "noise" not in name]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimiser = torch.optim.Adam(parameters, lr=settings.pti_lr)
    for done in range(settings.pti_steps):
        if should_stop():
            return True, done
        distance, parts = objective(generator.synthesis(ws))
        _check_finite(distance, index)
        optimiser.zero_grad(set_to_none=True)
        distance.backward()
        optimiser.step()
        index += 1
        losses = {k: float(v.detach()) for k, v in parts.items()}
        yield ProjectionStep(index, total, "pti", float(distance.detach()), losses,
                             time.perf_counter() - began)  # fmt: skip
    return False, settings.pti_steps


def _check_finite(loss: torch.Tensor, index: int) -> None:
    if not torch.isfinite(loss):
        raise DivergedError(
            f"the projection diverged (loss became NaN or infinite) at step {index + 1}; "
            "try a smaller learning rate"
        )


# --------------------------------------------------------------------------------------
# From a user's image to a target, and from a projection to a start state

#: Sides shorter than this cannot be meaningfully enlarged to a model's resolution.
MIN_SIDE = 8


def prepare_target(image, resolution: int, channels: int, value_range=None):
    """The model's view of a user's image: ``(target, model_rgb, source, conversion)``.

    A non-square image is centre-cropped to a square, then resized to ``resolution``;
    gray is replicated to RGB (and RGB averaged for a one-channel model). ``source`` maps
    results back to the crop's shape, dtype and value range; ``conversion`` says, in
    plain JSON, what was done.
    """
    from napari_freedrag import imaging

    array = np.asarray(image)
    if array.ndim >= 2 and min(array.shape[:2]) < MIN_SIDE:
        raise InputError(
            f"the image is {array.shape[0]}x{array.shape[1]} px: projection needs at least "
            f"{MIN_SIDE}x{MIN_SIDE} px (the model works at {resolution}x{resolution})"
        )
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(
            f"the image has {bad} NaN or infinite pixel(s); fill or mask them before projecting"
        )
    rgb, whole = imaging.to_model_rgb(array, value_range)  # validates dtype and channels
    value_range = whole.value_range  # the crop keeps the whole image's value mapping
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = None if height == width else [top, top + side, left, left + side]
    if crop is not None:
        array = array[top : top + side, left : left + side]
    rgb, source = imaging.to_model_rgb(array, value_range)
    model_rgb = imaging.resize_rgb(rgb, (resolution, resolution))
    tensor = torch.from_numpy(model_rgb.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    if channels == 1:
        tensor = tensor.mean(dim=1, keepdim=True)
        gray = np.rint((tensor[0, 0].numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        model_rgb = np.repeat(gray[..., None], 3, axis=2)
    conversion = {
        "channels": {
            "gray": "gray replicated to RGB",
            "rgb": "RGB",
            "rgba": "RGBA, alpha set aside",
        }[source.channels]  # fmt: skip
        + (", then averaged to the model's one channel" if channels == 1 else ""),
        "crop": crop,
        "resize": None if side == resolution else [[side, side], [resolution, resolution]],
        "value_range": [float(v) for v in source.value_range],
    }
    return tensor, model_rgb, source, conversion


def similarity(reference: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """PSNR (dB) and SSIM of two ``(H, W, 3)`` uint8 images (scikit-image's definitions)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    return {
        "psnr": float(peak_signal_noise_ratio(reference, image, data_range=255)),
        "ssim": float(structural_similarity(reference, image, channel_axis=2, data_range=255)),
    }


def provenance(settings: ProjectionSettings, result: Projection, conversion, metrics) -> dict:
    """Plain-JSON record of a projection for reports and layer metadata."""
    return {
        "mode": settings.mode, "steps": result.steps, "requested_steps": settings.total_steps,
        "stopped": result.stopped, "perceptual": result.perceptual,
        "final_losses": result.losses, **metrics, "seconds": result.seconds,
        "conversion": conversion, "settings": asdict(settings),
    }  # fmt: skip


def invert_steps(backend, image, settings: ProjectionSettings, value_range=None, stop=None):
    """Project ``image`` into ``backend``'s generator; steps as a generator, a
    :class:`~napari_freedrag.engine.protocol.StartState` as its return value.

    The state's ``extra["generator"]`` is the copy holding the projected noise maps (and
    the PTI weights): dragging from the state renders with it.
    """
    from napari_freedrag.engine.protocol import StartState

    settings = settings.check()
    generator = backend.generator
    target, model_rgb, source, conversion = prepare_target(
        image, generator.img_resolution, generator.img_channels, value_range
    )
    needs_d = settings.perceptual != "ssim"
    discriminator = backend.discriminator() if needs_d else None
    result = yield from project_steps(
        generator, target.to(backend.device), settings, discriminator, stop
    )
    record = provenance(settings, result, conversion, similarity(model_rgb, result.image))
    info = {"model": backend.name, "kind": backend.kind, "source": source.to_json(),
            "projection": record}  # fmt: skip
    extra = {"generator": result.generator, "source": source, "target_rgb": model_rgb}
    return StartState(result.ws, backend.image_size, result.image, info, extra)
