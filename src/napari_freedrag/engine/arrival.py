"""When a point counts as arrived, and where the handle's content actually went.

The method loops move *carriers* (FreeDrag) or *tracked points* (DragGAN); their stop rule
says when those are close enough.  Whether the image content under the handle followed is
a separate measurement: the nearest match of the handle's initial feature vector in the
final feature map (DragGAN's tracking rule), searched around the handle.  It changes no
step of either algorithm; it only decides whether a run may call itself converged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .initial import InitialFeatures, feature_shape
from .patches import Box, box_around, sample
from .presets import COMPARE, FreeDragParams, Params


@dataclass(frozen=True)
class ArriveRule:
    """``distance <comparison> threshold`` in ``units`` (image or feature pixels)."""

    threshold: float
    comparison: str
    units: str

    def met(self, distance: torch.Tensor) -> torch.Tensor:
        return COMPARE[self.comparison](distance, self.threshold)

    def met_in_image(self, a: np.ndarray, b: np.ndarray, scale) -> np.ndarray:
        """The rule for image-pixel points ``a`` and ``b`` ``(N, 2)``."""
        per_pixel = np.asarray(scale, np.float64) if self.units == "feature" else np.ones(2)
        distance = torch.as_tensor(np.linalg.norm((a - b) * per_pixel, axis=-1))
        return self.met(distance).numpy()


def arrive_rule(params: Params) -> ArriveRule:
    """FreeDrag: carrier strictly within ``arrive_distance``; DragGAN / DragDiffusion: the
    preset's stop comparison with ``stop_distance``."""
    if isinstance(params, FreeDragParams):
        return ArriveRule(params.arrive_distance, "<", params.arrive_units)
    return ArriveRule(params.stop_distance, params.stop_comparison, params.units)


def _to_map(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Image pixels -> the feature position they read when the map is upsampled."""
    return (q + 0.5) * scale - 0.5


def _square(radius: int) -> torch.Tensor:
    axis = torch.arange(-radius, radius + 1, dtype=torch.float64)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def _nearest(features, wanted, candidates, scale, handle, in_image) -> torch.Tensor:
    """The candidate whose feature is nearest ``wanted``; exact ties go to the candidate
    closest to ``handle`` (content that cannot be told apart did not move)."""
    image_pos = candidates if in_image else (candidates + 0.5) / scale - 0.5
    order = torch.argsort((image_pos - handle).norm(dim=1), stable=True)
    candidates, image_pos = candidates[order], image_pos[order]
    at = _to_map(candidates, scale) if in_image else candidates
    distance = (sample(features, at) - wanted).double().pow(2).sum(dim=-1)
    return image_pos[int(distance.argmin())]


def handle_boxes(session, handles: np.ndarray) -> list[Box]:
    """The boxes of the start's features :func:`content_points` reads (at the handles)."""
    scale = torch.tensor(session.feature_scale, dtype=torch.float64)
    points = _to_map(torch.as_tensor(handles, dtype=torch.float64), scale)
    return [box_around(point[None], feature_shape(session)) for point in points]


def content_points(
    session, initial: InitialFeatures, latent: torch.Tensor, handles: np.ndarray, reach: np.ndarray
) -> np.ndarray:
    """Where each handle's content is in the image of ``latent``, image px ``(N, 2)``.

    ``initial`` holds the start's features (read at :func:`handle_boxes`); ``reach``
    (image px, per point) bounds the search square around each handle.  A coarse search
    over feature pixels is refined over image pixels and then to sub-pixel by a parabola
    through the neighbouring distances.
    """
    height, width = session.image_size
    scale = torch.tensor(session.feature_scale, dtype=torch.float64)
    shape = initial.shape
    map_bounds = torch.tensor(shape, dtype=torch.float64) - 1
    image_bounds = torch.tensor([height - 1, width - 1], dtype=torch.float64)
    points = torch.as_tensor(handles, dtype=torch.float64)
    wanted = sample(initial.read(handle_boxes(session, handles)), _to_map(points, scale))
    windows = []
    for i, point in enumerate(points):
        radius = math.ceil(float(reach[i]) * float(scale.max())) + 1
        centre = _to_map(point, scale).round()
        cells = torch.minimum((centre + _square(radius)).clamp(min=0), map_bounds)
        windows.append(cells)
    boxes = [box_around(torch.stack([w.min(0).values - 2, w.max(0).values + 2]), shape)
             for w in windows]  # fmt: skip
    with torch.no_grad():
        final = session.features(latent.detach(), boxes)
    found = []
    fine = _square(math.ceil(1 / float(scale.min())))
    for i, point in enumerate(points):
        coarse = _nearest(final, wanted[i], windows[i], scale, point, in_image=False)
        near = torch.minimum((coarse.round() + fine).clamp(min=0), image_bounds)
        best = _nearest(final, wanted[i], near, scale, point, in_image=True)
        found.append(_refine(final, wanted[i], best, scale, image_bounds))
    return torch.stack(found).numpy()


def _refine(features, wanted, best, scale, bounds) -> torch.Tensor:
    """Sub-pixel position: the vertex of the parabola through the distances at ``best`` and
    its two neighbours on each axis (kept within half a pixel, and inside the image)."""
    steps = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=torch.float64)
    around = torch.minimum((best + steps).clamp(min=0), bounds)
    distance = (sample(features, _to_map(around, scale)) - wanted).double().pow(2).sum(dim=-1)
    refined = best.clone()
    for axis, (lo, hi) in enumerate(((1, 2), (3, 4))):
        curvature = distance[lo] - 2 * distance[0] + distance[hi]
        if bool(torch.equal(around[lo], around[hi])) or not float(curvature) > 0:
            continue
        shift = 0.5 * float(distance[lo] - distance[hi]) / float(curvature)
        refined[axis] = best[axis] + max(-0.5, min(0.5, shift))
    return torch.minimum(refined.clamp(min=0), bounds)
