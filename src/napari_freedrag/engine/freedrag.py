"""The FreeDrag loop (docs/algorithm.md §2-§4): line search, inner Adam steps, templates.

Geometry (carriers ``h``, targets ``t``) is kept in float64 feature-map coordinates
``h * s`` on the CPU; only patch reads touch the backend's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .arrival import arrive_rule
from .initial import InitialFeatures
from .patches import Box, box_around, discrepancy, patch_features, patch_offsets
from .presets import FreeDragParams
from .progress import Diverged, Progress

#: Line-search candidates: fractions of the reach along the direction to the target.
FRACTIONS = torch.arange(1, 11, dtype=torch.float64) / 10
#: The template weight at ``L_end = 0``; the formula never exceeds it (docs/algorithm.md §4).
LAMBDA_MAX = 1.0 / (1.0 + 9.0 ** (-1.0 / 3.0))


def template_weight(
    l_end: torch.Tensor,
    l: float,  # noqa: E741
    done: torch.Tensor | None = None,
) -> torch.Tensor:
    """λ of the adaptive template update: 0.5 at ``0.2·l``, 0.1 at ``0.8·l``, capped, 1 if done."""
    alpha = math.log(9.0) / (0.6 * l)
    beta = 0.2 * l
    lam = torch.sigmoid(-alpha * (l_end.double() - beta)).clamp(max=LAMBDA_MAX)
    if done is not None:
        lam = torch.where(done, torch.ones_like(lam), lam)
    return lam


def _direction(h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors from ``h`` to ``t`` (zero where they coincide) and the distances."""
    delta = t - h
    dist = delta.norm(dim=-1)
    unit = torch.where(dist[:, None] > 0, delta / dist.clamp(min=1e-12)[:, None], 0.0)
    return unit, dist


def _clamp(points: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    return torch.minimum(points.clamp(min=0.0), bounds)


def candidates(
    h: torch.Tensor, t: torch.Tensor, d: float, fallback: torch.Tensor, bounds: torch.Tensor
) -> torch.Tensor:
    """The 10 line-search candidates per point, ``(N, 10, 2)``.

    Case A searches ``reach(d)`` ahead of ``h``; a fallback (case C) first steps back by
    ``reach(d)``, clamps into the image, then searches ``reach(2d)`` ahead.
    """
    unit, dist = _direction(h, t)
    back = _clamp(h - dist.clamp(max=d)[:, None] * unit, bounds)
    base = torch.where(fallback[:, None], back, h)
    unit, dist = _direction(base, t)
    reach = dist.clamp(max=d) * torch.where(fallback, 2.0, 1.0)
    reach = torch.minimum(reach, dist)
    return base[:, None, :] + FRACTIONS[None, :, None] * reach[:, None, None] * unit[:, None, :]


def line_search(
    features: torch.Tensor,
    h: torch.Tensor,
    t: torch.Tensor,
    templates: torch.Tensor,
    l_in: torch.Tensor,
    l_end: torch.Tensor,
    active: torch.Tensor,
    l: float,  # noqa: E741
    d: float,
    offsets: torch.Tensor,
    bounds: torch.Tensor,
) -> tuple[torch.Tensor, list[str | None]]:
    """New carriers and each point's decision: 'A' move, 'B' hold, 'C' fall back (§4.1).

    Inactive (done) points keep their carrier and get ``None``.
    """
    well = l_end < 0.5 * l
    frozen = ~well & (l_end < l_in)
    fallback = ~well & ~frozen
    cands = candidates(h, t, d, fallback, bounds)
    with torch.no_grad():
        scores = discrepancy(patch_features(features, cands, offsets), templates[:, None]).double()
    goal = torch.where(fallback, 0.0, l).cpu()
    pick = (scores.cpu() - goal[:, None]).abs().argmin(dim=1)
    chosen = cands[torch.arange(len(h)), pick]
    move = active & ~frozen
    new_h = torch.where(move[:, None], chosen, h)
    labels = np.where(well.numpy(), "A", np.where(frozen.numpy(), "B", "C"))
    decisions = [str(c) if a else None for c, a in zip(labels, active.tolist(), strict=True)]
    return new_h, decisions


def run_freedrag(
    session,
    initial: InitialFeatures,
    handles: np.ndarray,
    targets: np.ndarray,
    params: FreeDragParams,
    use_mask: bool,
    retarget: Callable[[], np.ndarray | None],
) -> Iterator[Progress]:
    """Yield one :class:`Progress` per optimiser step, the last one marked ``last``.

    ``initial`` gives the start's features over the boxes read (the templates and the
    first line search; the whole map with a mask).  ``retarget()`` returns new targets
    (image px) when they changed; they are taken at the next sub-motion's line search, and
    a done point whose target moved is dragged again.
    """
    latent = session.latent
    height, width = session.image_size
    scale = torch.tensor(session.feature_scale, dtype=torch.float64)
    bounds = torch.tensor([height - 1, width - 1], dtype=torch.float64) * scale

    def place(points: np.ndarray) -> torch.Tensor:
        """Image pixels -> feature coordinates (whole feature pixels when snapping)."""
        placed = torch.as_tensor(points, dtype=torch.float64) * scale
        return (
            torch.minimum(placed.round(), bounds.floor()) if params.snap_to_feature_grid else placed
        )

    h, t = place(handles), place(targets)
    radius = params.patch_radius * (scale if params.patch_units == "image" else torch.ones(2))
    offsets = patch_offsets(params.patch_grid, (float(radius[0]), float(radius[1])))
    rule = arrive_rule(params)
    per_feature_px = 1 / scale if rule.units == "image" else torch.ones(2)

    def arrived(h: torch.Tensor) -> torch.Tensor:
        return rule.met(((t - h) * per_feature_px).norm(dim=1))

    def image_points(x: torch.Tensor) -> np.ndarray:
        return (x / scale).numpy().copy()

    shape = initial.shape
    n = len(h)
    l_in = torch.zeros(n, dtype=torch.float64)
    l_end = torch.zeros(n, dtype=torch.float64)
    done = arrived(h)
    exit_level = params.exit_fraction * params.l
    done_level = params.done_fraction * params.l
    optimiser = torch.optim.Adam([latent], lr=params.lr)
    step = 0
    good = (latent.detach().clone(), 0, image_points(h))

    def boxes(*point_sets: torch.Tensor) -> list[Box]:
        """Where reads at these points touch; with a mask only the no-gradient reads are
        boxed (the mask term of a step needs the whole map)."""
        return [
            box_around(torch.cat([p[i].reshape(-1, 1, 2) + offsets for p in point_sets]), shape)
            for i in range(n)
        ]

    def search_boxes(h: torch.Tensor, t: torch.Tensor) -> list[Box]:
        """Every read of a line search from ``h`` (both cases' candidates, and ``h``)."""
        falls_back = torch.ones(n, dtype=torch.bool)
        return boxes(
            h,
            candidates(h, t, params.d, ~falls_back, bounds),
            candidates(h, t, params.d, falls_back, bounds),
        )

    initial.want(search_boxes(h, t))  # computed with the templates unless t moves first
    templates = patch_features(initial.read(boxes(h)), h, offsets)
    features = None  # the map of the latest sub-motion's end, over the next search's boxes
    while step < params.max_steps and not bool(done.all()):
        moved = retarget()
        if moved is not None:
            new_t = place(moved)
            done = done & (new_t == t).all(dim=1)
            t = new_t
        if features is None:
            features = initial.read(search_boxes(h, t))
        elif moved is not None:  # the search now reads towards the new targets
            with torch.no_grad():
                features = session.features(latent, search_boxes(h, t))
        h, decisions = line_search(
            features, h, t, templates, l_in, l_end, ~done, params.l, params.d, offsets, bounds
        )
        read_boxes = None if use_mask else boxes(h)
        for inner in range(params.inner_steps):
            current = session.features(latent, read_boxes)
            losses = discrepancy(patch_features(current, h, offsets), templates)
            total = losses.sum()
            if use_mask:
                term = session.mask_term(latent, current)
                if term is None:  # the backend found nothing to preserve: read boxes
                    use_mask = False
                    read_boxes = boxes(h)
                else:
                    total = total + params.mask_weight * term
            if not bool(torch.isfinite(total)):
                raise Diverged(*good, at_step=step + 1)
            good = (latent.detach().clone(), step, image_points(h))
            point_losses = losses.detach().double().cpu()
            if inner == 0:
                l_in = point_losses
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
            step += 1
            progress = Progress(
                points=image_points(h),
                targets=image_points(t),
                point_losses=point_losses.numpy(),
                loss=float(total.detach()),
                decisions=decisions,
                done=done.numpy().copy(),
            )
            sub_motion_ends = (
                float(point_losses.max()) < exit_level
                or inner == params.inner_steps - 1
                or step >= params.max_steps
            )
            if not sub_motion_ends:
                yield progress
                continue
            with torch.no_grad():
                features = session.features(latent, search_boxes(h, t))
                patches = patch_features(features, h, offsets)
                l_end = discrepancy(patches, templates).double().cpu()
            if not bool(torch.isfinite(l_end).all()):
                raise Diverged(*good, at_step=step + 1)
            done = done | (arrived(h) & (l_end <= done_level))
            lam = template_weight(l_end, params.l, done).to(patches.dtype).to(patches.device)
            templates = lam[:, None, None] * patches + (1 - lam[:, None, None]) * templates
            progress.done = done.numpy().copy()
            progress.last = bool(done.all()) or step >= params.max_steps
            yield progress
            break
