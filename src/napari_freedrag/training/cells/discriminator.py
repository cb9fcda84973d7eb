"""A small residual StyleGAN2-style discriminator, used only to train the ``cells`` model.

Equalised learning rate (weights stored at unit variance, scaled at run time), residual
blocks that halve the resolution with a [1, 3, 3, 1] blur, a minibatch-standard-deviation
feature and a fully connected head. It never ships: only the generator's EMA does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LRELU_GAIN = math.sqrt(2.0)


def _blur_kernel(channels: int) -> torch.Tensor:
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(taps, taps)
    kernel /= kernel.sum()
    return kernel.expand(channels, 1, 4, 4).contiguous()


def blur_downsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Anti-aliased 2x downsampling (a stride-2 depthwise [1,3,3,1] filter)."""
    return F.conv2d(x, kernel, stride=2, padding=1, groups=x.shape[1])


class EqualConv2d(nn.Module):
    def __init__(self, in_ch, out_ch, kernel, bias=True, activate=True, downsample=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.activate, self.downsample, self.padding = activate, downsample, kernel // 2
        if downsample:
            # A buffer moves with the module (no copy to the GPU at every call); not
            # persistent, so snapshots stay as they were.
            self.register_buffer("blur", _blur_kernel(in_ch), persistent=False)

    def forward(self, x):
        if self.downsample:
            x = blur_downsample(x, self.blur)
        x = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)
        return F.leaky_relu(x, 0.2) * _LRELU_GAIN if self.activate else x


class EqualLinear(nn.Module):
    def __init__(self, in_features, out_features, activate=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale, self.activate = 1.0 / math.sqrt(in_features), activate

    def forward(self, x):
        x = F.linear(x, self.weight * self.scale, self.bias)
        return F.leaky_relu(x, 0.2) * _LRELU_GAIN if self.activate else x


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions (the second one downsampling) plus a downsampled 1x1 skip."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, downsample=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, activate=False, downsample=True)

    def forward(self, x):
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """Image ``(N, C, R, R)`` in ``[-1, 1]`` -> one realness logit per image."""

    def __init__(
        self, img_resolution=64, img_channels=3, channel_base=2048, channel_max=128, mbstd_group=4
    ):
        super().__init__()

        def channels(res):
            return min(channel_base // res, channel_max)

        self.mbstd_group = mbstd_group
        self.from_rgb = EqualConv2d(img_channels, channels(img_resolution), 1)
        blocks, res = [], img_resolution
        while res > 4:
            blocks.append(ResidualBlock(channels(res), channels(res // 2)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        top = channels(4)
        self.conv = EqualConv2d(top + 1, top, 3)
        self.fc = EqualLinear(top * 16, top)
        self.out = EqualLinear(top, 1, activate=False)

    def _minibatch_std(self, x):
        """Append the std over small groups of the batch: lets D see a lack of variety."""
        n, c, h, w = x.shape
        group = min(self.mbstd_group, n)
        while n % group:
            group -= 1
        y = x.reshape(group, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))
        y = y.reshape(-1, 1, 1, 1).repeat(group, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, img):
        x = self.blocks(self.from_rgb(img))
        x = self.conv(self._minibatch_std(x))
        return self.out(self.fc(x.flatten(1))).squeeze(1)
