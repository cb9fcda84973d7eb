"""The DragGAN baseline and DragDiffusion's variant of it (docs/algorithm.md §7, §7b).

Each step reads the feature map once: point tracking (nearest neighbour to the initial
handle feature) on it, then motion supervision (features around each point pulled one
pixel towards its target) and the update.

With ``units == "image"`` points live in image pixels and the feature map is read as if
bilinearly upsampled to image size: the value at image pixel ``q`` is the bilinear
sample at ``(q + 0.5)·s − 0.5`` (what ``interpolate(..., align_corners=False)`` gives),
so the full upsampled map is never built.  With ``units == "feature"`` points live in
feature pixels (DragDiffusion).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .arrival import arrive_rule
from .initial import InitialFeatures
from .patches import Box, box_around, sample
from .presets import COMPARE, DragGANParams
from .progress import Diverged, Progress


def _grid(radius: int) -> torch.Tensor:
    """Integer offsets ``(M, 2)`` of the square ``[-radius, radius]²``."""
    axis = torch.arange(-radius, radius + 1, dtype=torch.float64)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def motion_region(point: torch.Tensor, radius: float, shape: str) -> torch.Tensor:
    """Whole pixels supervised around ``point``: a disc or square of ``radius`` (never empty)."""
    centre = point.round()
    pixels = centre + _grid(math.ceil(radius) + 1)
    delta = pixels - point
    if shape == "circle":
        inside = delta.norm(dim=1) <= radius + 1e-9
    else:
        inside = delta.abs().max(dim=1).values <= radius + 1e-9
    return pixels[inside] if bool(inside.any()) else centre[None]


def upsampled_position(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Where image pixel ``q`` reads the feature map when it is upsampled to image size."""
    return (q + 0.5) * scale - 0.5


def track(
    features: torch.Tensor,
    points: torch.Tensor,
    initial: torch.Tensor,
    radius: float,
    bounds: torch.Tensor,
    to_map: Callable[[torch.Tensor], torch.Tensor],
    metric: str,
) -> torch.Tensor:
    """Each point moved to the whole pixel, within ``radius`` (a square) and the image,
    whose feature is nearest (``"l1"`` or ``"l2"``) to its initial feature ``(N, C)``."""
    offsets = _grid(math.ceil(radius))
    candidates = torch.minimum((points.round()[:, None, :] + offsets).clamp(min=0), bounds)
    diff = sample(features, to_map(candidates)) - initial[:, None, :]
    distance = diff.pow(2).sum(dim=-1) if metric == "l2" else diff.abs().sum(dim=-1)
    best = distance.argmin(dim=1).cpu()
    return candidates[torch.arange(len(points)), best]


def run_draggan(
    session,
    initial: InitialFeatures,
    handles: np.ndarray,
    targets: np.ndarray,
    params: DragGANParams,
    use_mask: bool,
    retarget: Callable[[], np.ndarray | None],
) -> Iterator[Progress]:
    """Yield one :class:`Progress` per optimiser step, the last one marked ``last``.

    ``initial`` gives the start's features at the handles (the whole map with a mask).
    ``retarget()`` returns new targets (image px) when they changed; each step takes them
    after tracking, before its stop check and motion supervision.
    """
    latent = session.latent
    height, width = session.image_size
    scale = torch.tensor(session.feature_scale, dtype=torch.float64)
    unit = torch.ones(2, dtype=torch.float64) if params.units == "image" else scale
    bounds = torch.tensor([height - 1, width - 1], dtype=torch.float64) * unit
    grid = (bounds * scale / unit).floor()

    def place(points: np.ndarray) -> torch.Tensor:
        """Image pixels -> the method's units (whole feature pixels when snapping)."""
        placed = torch.as_tensor(points, dtype=torch.float64) * unit
        if params.snap_to_feature_grid:
            placed = torch.minimum((placed * scale / unit).round(), grid) * unit / scale
        return placed

    p, t = place(handles), place(targets)
    reach = max(math.ceil(params.track_radius), math.ceil(params.motion_radius) + 1) + 1
    rule = arrive_rule(params)
    supervised = COMPARE[params.supervise_comparison]

    def to_map(q: torch.Tensor) -> torch.Tensor:
        return upsampled_position(q, scale) if params.units == "image" else q

    def image_points(x: torch.Tensor) -> np.ndarray:
        return (x / unit).numpy().copy()

    def reached(p: torch.Tensor) -> torch.Tensor:
        return rule.met((t - p).norm(dim=1))

    shape = initial.shape
    n = len(p)

    def boxes(p: torch.Tensor, reach: int = reach) -> list[Box] | None:
        if use_mask:
            return None
        corners = torch.tensor([[-reach, -reach], [reach, reach]], dtype=torch.float64)
        return [box_around(to_map(p[i] + corners), shape) for i in range(n)]

    handle_features = sample(initial.read(boxes(p, 0)), to_map(p))

    def motion(current: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        losses = []
        for i in range(n):
            delta = t[i] - p[i]
            dist = float(delta.norm())
            if not supervised(dist, params.supervise_distance):
                losses.append(current.new_zeros(()))
                continue
            region = motion_region(p[i], params.motion_radius, params.motion_shape)
            anchor = sample(current, to_map(region)).detach()
            shifted = sample(current, to_map(region + delta / dist))
            loss = (shifted - anchor).abs().mean()
            if params.motion_reduction == "sum":
                loss = loss * len(region)
            losses.append(loss)
        return torch.stack(losses)

    optimiser = torch.optim.Adam([latent], lr=params.lr)
    step = 0
    good = (latent.detach().clone(), 0, image_points(p))
    done = reached(p)
    pending: Progress | None = None
    while not bool(done.all()) or pending is not None:
        with torch.set_grad_enabled(step < params.max_steps):
            current = session.features(latent, boxes(p))
        if step > 0:
            p = track(current.detach(), p, handle_features, params.track_radius, bounds, to_map,
                      params.track_metric)  # fmt: skip
        moved = retarget()
        if moved is not None:
            t = place(moved)
        done = reached(p)
        if pending is not None:
            pending.points = image_points(p)
            pending.targets = image_points(t)
            pending.done = done.numpy().copy()
            pending.last = bool(done.all()) or step >= params.max_steps
            yield pending
            if pending.last:
                return
            pending = None
        losses = motion(current, p)
        total = losses.sum()
        if use_mask:
            term = session.mask_term(latent, current)
            if term is None:
                use_mask = False  # the backend found nothing to preserve: read boxes
            else:
                total = total + params.mask_weight * term
        if not bool(torch.isfinite(total)):
            raise Diverged(*good, at_step=step + 1)
        good = (latent.detach().clone(), step, image_points(p))
        optimiser.zero_grad(set_to_none=True)
        if total.requires_grad:
            total.backward()
            optimiser.step()
        step += 1
        pending = Progress(
            points=image_points(p),
            targets=image_points(t),
            point_losses=losses.detach().double().cpu().numpy(),
            loss=float(total.detach()),
            decisions=None,
            done=done.numpy().copy(),
        )
