"""Bilinear feature sampling with clamping, patch features and the boxes they read.

All positions here are ``(row, col)`` in feature-map pixels.  Positions are clamped into
the map, so points on the image border never read outside it (the reference code wraps
or crashes there).  Bilinear weights carry no gradient; gradients flow to the features.
"""

from __future__ import annotations

import math

import torch

Box = tuple[int, int, int, int]


def patch_offsets(grid: int, radius: tuple[float, float]) -> torch.Tensor:
    """``(grid*grid, 2)`` float64 offsets spanning ``±radius`` (rows, cols), row-major."""
    unit = torch.linspace(-1.0, 1.0, grid, dtype=torch.float64) if grid > 1 else torch.zeros(1)
    rows, cols = torch.meshgrid(unit * radius[0], unit * radius[1], indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).double()


def clamp_positions(positions: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Positions clamped into ``[0, h-1] x [0, w-1]``."""
    h, w = shape
    return torch.stack(
        [positions[..., 0].clamp(0, h - 1), positions[..., 1].clamp(0, w - 1)], dim=-1
    )


def sample(features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``(C, h, w)`` features at ``(..., 2)`` positions -> ``(..., C)``."""
    _, h, w = features.shape
    pos = clamp_positions(positions.detach().to(features.device, features.dtype), (h, w))
    flat = pos.reshape(-1, 2)
    r0 = flat[:, 0].floor().long().clamp(0, h - 1)
    c0 = flat[:, 1].floor().long().clamp(0, w - 1)
    r1 = (r0 + 1).clamp(max=h - 1)
    c1 = (c0 + 1).clamp(max=w - 1)
    wr = (flat[:, 0] - r0).unsqueeze(0)
    wc = (flat[:, 1] - c0).unsqueeze(0)
    # One gather for the four corners: its backward fills one map-sized gradient, where
    # four indexings filled four and added them (a third of a 512 px drag step).
    corners = torch.cat([r0 * w + c0, r0 * w + c1, r1 * w + c0, r1 * w + c1])
    f00, f01, f10, f11 = features.reshape(features.shape[0], h * w)[:, corners].chunk(4, dim=1)
    top = f00 * (1 - wc) + f01 * wc
    bottom = f10 * (1 - wc) + f11 * wc
    values = top * (1 - wr) + bottom * wr
    return values.T.reshape(*positions.shape[:-1], features.shape[0])


def patch_features(
    features: torch.Tensor, centres: torch.Tensor, offsets: torch.Tensor
) -> torch.Tensor:
    """Patch features ``(..., K, C)`` around ``(..., 2)`` centres (docs/algorithm.md §2)."""
    return sample(features, centres.unsqueeze(-2) + offsets)


def discrepancy(patch: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over each patch's values: ``(..., K, C) -> (...)``."""
    return (patch - template).abs().mean(dim=(-2, -1))


def box_around(positions: torch.Tensor, shape: tuple[int, int]) -> Box:
    """The end-exclusive box of feature pixels every bilinear read at ``positions`` touches."""
    pos = clamp_positions(positions.detach().reshape(-1, 2), shape)
    lo = pos.min(dim=0).values
    hi = pos.max(dim=0).values
    h, w = shape
    r0, c0 = math.floor(lo[0].item()), math.floor(lo[1].item())
    r1, c1 = math.floor(hi[0].item()) + 2, math.floor(hi[1].item()) + 2
    return (max(r0, 0), max(c0, 0), min(r1, h), min(c1, w))
