"""Offline image distances for projection: multi-scale SSIM and discriminator features.

LPIPS needs a VGG/AlexNet backbone download; these need nothing beyond the checkpoint.
All functions take generator-range images ``(1, C, H, W)`` in ``[-1, 1]`` and are
differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Scale weights of the 5-scale MS-SSIM (Wang et al. 2003); fewer scales renormalise them.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW = 11
SIGMA = 1.5


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=like.device) - (size - 1) / 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    taps = taps / taps.sum()
    return torch.outer(taps, taps).expand(channels, 1, size, size).to(like.dtype)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term of two ``[0, 1]`` images (valid windows)."""
    channels = x.shape[1]
    window = _gaussian_window(min(WINDOW, x.shape[-1], x.shape[-2]), SIGMA, channels, x)

    def blur(t):
        return F.conv2d(t, window, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean(), cs.mean()


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM of two generator-range images, as many scales as fit an 11 px window."""
    x, y = (x + 1) / 2, (y + 1) / 2
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(x.shape[-2:]) >> scales >= WINDOW:
        scales += 1
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=x.device)
    weights = weights / weights.sum()
    value = torch.ones((), device=x.device)
    for level in range(scales):
        ssim, cs = _ssim_terms(x, y)
        last = level == scales - 1
        # Clamped: a negative contrast term at a coarse scale would make the power undefined.
        value = value * (ssim if last else cs).clamp_min(1e-6) ** weights[level]
        if not last:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return value


def feature_distance(features: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS-style distance of two feature stacks: channel-normalised, squared, summed per layer.

    Each layer contributes a value in ``[0, 4]`` (unit vectors per pixel), so no layer's
    scale dominates.
    """
    total = torch.zeros((), device=features[0].device)
    for ours, theirs in zip(features, target, strict=True):
        ours = ours / (ours.norm(dim=1, keepdim=True) + 1e-8)
        theirs = theirs / (theirs.norm(dim=1, keepdim=True) + 1e-8)
        total = total + (ours - theirs).square().sum(dim=1).mean()
    return total
