"""A StyleGAN2 generator ("config F", skip architecture) in plain PyTorch.

Written from the published architecture so that NVIDIA's stylegan2-ada-pytorch weights
load under their own ``state_dict`` names and compute the same numbers (float32, no
custom ops). Up-sampling follows NVIDIA's ``upfirdn2d`` semantics with the ``[1, 3, 3, 1]``
filter: a stride-2 transposed convolution followed by the FIR filter for ``conv0``, and
zero insertion followed by the FIR filter for the skip image.

This module is NVIDIA's forward only. Running part of the network (up to the feature
block, over a region, from cached lower blocks) has one home: :mod:`.partial`. The
layers expose the pieces it needs (``conv`` with a "valid" mode, ``styled_conv``,
``activate``) so that both compute with the same operations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_freedrag.errors import ModelError

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each latent to unit mean square (StyleGAN's input normalisation)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """Bias, activation, gain and clamp in NVIDIA's order (bias on dimension 1).

    ``inplace`` overwrites ``x`` (same numbers, no new full-size buffers: renders of
    large images spend much of their time allocating and filling those).
    """
    if activation not in ("lrelu", "linear"):
        raise ModelError(f"unsupported activation {activation!r}: use 'lrelu' or 'linear'")
    if bias is not None:
        bias = bias.reshape([1, -1] + [1] * (x.ndim - 2))
        x = x.add_(bias) if inplace else x + bias
    if activation == "lrelu":
        x = F.leaky_relu_(x, LRELU_SLOPE) if inplace else F.leaky_relu(x, LRELU_SLOPE)
        gain = LRELU_GAIN if gain is None else gain
    else:
        gain = 1.0 if gain is None else gain
    if gain != 1:
        x = x.mul_(gain) if inplace else x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x


def make_resample_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """The normalised 2-D outer product of a 1-D FIR filter, as NVIDIA's ``setup_filter``."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def fir_filter(x: torch.Tensor, f: torch.Tensor, gain: float, padding: int = 0) -> torch.Tensor:
    """Depthwise correlation of every channel with the (flipped) 2-D filter ``f``
    ('valid', after ``padding`` zero rows/columns on each side)."""
    channels = x.shape[1]
    kernel = (f * gain).flip([0, 1]).to(x.dtype)
    kernel = kernel[None, None].expand(channels, 1, *f.shape)
    return F.conv2d(x, kernel, padding=padding, groups=channels)


def upsample_image(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x up-sampling of the skip image: zero insertion, pad (2, 1), FIR with gain 4."""
    b, c, h, w = img.shape
    x = img.reshape(b, c, h, 1, w, 1)
    x = F.pad(x, [0, 1, 0, 0, 0, 1]).reshape(b, c, 2 * h, 2 * w)
    fh, fw = f.shape
    x = F.pad(x, [(fw + 1) // 2, (fw - 2) // 2, (fh + 1) // 2, (fh - 2) // 2])
    return fir_filter(x, f, gain=4.0)


def modulate(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> torch.Tensor:
    """Per-sample weights ``(B, out, in, kh, kw)``: scaled by the styles, optionally demodulated."""
    w = weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)
    if demodulate:
        w = w * demodulation(w).reshape(w.shape[0], -1, 1, 1, 1)
    return w


def demodulation(modulated: torch.Tensor) -> torch.Tensor:
    """``(B, out)`` factors that give every output channel unit expected variance."""
    return (modulated.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate (weights stored divided by ``lr_multiplier``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, activation=self.activation)


class MappingNetwork(nn.Module):
    """z (and optional class label c) -> W, broadcast to ``num_ws`` copies, with truncation."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.995,
    ):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        skip_w_avg_update: bool = False,
    ) -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise ModelError(
                    f"this generator is conditional: pass a class label c of size {self.c_dim}"
                )
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.training and not skip_w_avg_update and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally 2x up-sampling), noise, bias, leaky ReLU, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ):
        super().__init__()
        if kernel_size != 3 or up not in (1, 2):
            raise ModelError(
                "only 3x3 synthesis convolutions with up-sampling 1 or 2 are supported"
            )
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        )
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("resample_filter", make_resample_filter(resample_filter))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def modulated_weight(self, w: torch.Tensor) -> torch.Tensor:
        """``(B, out, in, 3, 3)`` demodulated weights for W vectors ``w`` ``(B, w_dim)``."""
        return modulate(self.weight, self.affine(w), demodulate=True)

    def conv_layout(self, weight: torch.Tensor) -> torch.Tensor:
        """The same weights (``(..., out, in, 3, 3)``) stored the way this layer's convolution
        reads them, so that repeated calls do not copy them (up-sampling layers read them
        transposed)."""
        if self.up == 1:
            return weight.contiguous()
        return weight.transpose(-4, -3).contiguous().transpose(-4, -3)

    def weight_sq(self) -> torch.Tensor:
        """``(out, in)`` squared weights summed over the kernel: demodulation without modulating."""
        return self.weight.square().sum(dim=[2, 3])

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """NVIDIA's layer: modulated weights for a single sample, modulated activations
        (the same numbers, one shared weight) for a batch."""
        batch = x.shape[0]
        y = self.grouped_conv(x, self.modulated_weight(w)) if batch == 1 else self.styled_conv(x, w)
        return self.activate(y, self.noise(noise_mode, batch, y))

    def grouped_conv(self, x: torch.Tensor, weight: torch.Tensor, padding=1) -> torch.Tensor:
        """:meth:`conv` with per-sample weights ``(B, out, in, 3, 3)`` (one group per sample)."""
        weight = weight.to(x.dtype)
        batch, out_ch, in_ch = weight.shape[:3]
        if batch == 1:
            return self.conv(x, weight[0], padding)
        y = self.conv(
            x.reshape(1, -1, *x.shape[2:]),
            weight.reshape(batch * out_ch, in_ch, 3, 3),
            padding,
            groups=batch,
        )
        return y.reshape(batch, out_ch, *y.shape[2:])

    def styled_conv(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        padding=1,
        shared_weight: torch.Tensor | None = None,
        weight_sq: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The styles scale the activations, the shared weights stay out of autograd's way
        (``shared_weight``: :attr:`weight` in a faster layout, see :meth:`conv_layout`;
        ``weight_sq``: a cached :meth:`weight_sq`)."""
        batch = x.shape[0]
        styles = self.affine(w)
        x = x * styles.reshape(batch, -1, 1, 1).to(x.dtype)
        shared = self.weight if shared_weight is None else shared_weight
        y = self.conv(x, shared.to(x.dtype), padding)
        weight_sq = self.weight_sq() if weight_sq is None else weight_sq
        dcoefs = (styles.square() @ weight_sq.t() + 1e-8).rsqrt()
        return y * dcoefs.reshape(batch, -1, 1, 1).to(y.dtype)

    def conv(self, x: torch.Tensor, weight: torch.Tensor, padding=1, groups: int = 1):
        """The 3x3 convolution (``up == 2``: stride-2 transposed, then the FIR filter) of
        weights ``(groups*out, in, 3, 3)``.

        ``padding=1``: NVIDIA's same-size output. ``padding=0`` ("valid"): ``x`` is a
        region with a one-pixel halo; the output is ``n - 2`` (``up == 1``) or ``2n - 4``
        (``up == 2``) pixels per side for ``n`` input pixels. ``up == 1`` also takes
        ``(rows, cols)`` paddings.
        """
        if self.up == 1:
            return F.conv2d(x, weight, padding=padding, groups=groups)
        out_ch = weight.shape[0] // groups
        in_ch = weight.shape[1]
        if groups == 1:
            wt = weight.transpose(0, 1)  # a view: no copy of the weights per call
        else:
            wt = (
                weight.reshape(groups, out_ch, in_ch, 3, 3)
                .transpose(1, 2)
                .reshape(groups * in_ch, out_ch, 3, 3)
            )
        t = F.conv_transpose2d(x, wt, stride=2, groups=groups)
        if padding == 0:
            t = t[:, :, 1:-1, 1:-1]
        return fir_filter(t, self.resample_filter, gain=4.0, padding=padding)

    def noise(
        self,
        noise_mode: str,
        batch: int,
        like: torch.Tensor,
        window: tuple[slice, slice] = (slice(None), slice(None)),
    ) -> torch.Tensor | None:
        """The per-pixel noise over ``window`` of the output map (``None``: no noise)."""
        if not self.use_noise or noise_mode == "none":
            return None
        if noise_mode == "const":
            return (self.noise_const[window] * self.noise_strength).to(like.dtype)
        if noise_mode == "random":
            full = torch.randn(
                [batch, 1, self.resolution, self.resolution], device=like.device, dtype=like.dtype
            )
            return full[(slice(None), slice(None), *window)] * self.noise_strength
        raise ModelError(f"unknown noise_mode {noise_mode!r}: use 'const', 'random' or 'none'")

    def activate(self, y: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Noise, bias, leaky ReLU, gain, clamp; in place when no gradient can need ``y``."""
        inplace = not (torch.is_grad_enabled() and y.requires_grad)
        if noise is not None:
            y = y.add_(noise) if inplace else y + noise
        bias = self.bias.to(y.dtype)
        return bias_act(y, bias, activation=self.activation, clamp=self.conv_clamp, inplace=inplace)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels (no demodulation), bias, clamp."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        batch = x.shape[0]
        if batch == 1:
            weight = modulate(self.weight, styles, demodulate=False)[0]
            y = F.conv2d(x, weight.to(x.dtype))
        else:
            y = F.conv2d(x * styles.reshape(batch, -1, 1, 1), self.weight.to(x.dtype))
        return bias_act(y, self.bias.to(y.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | up-sampling conv0), conv1, toRGB added to the up-sampled image."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        **layer_kwargs,
    ):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", make_resample_filter(resample_filter))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim,
                resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layer_kwargs,
            )
        self.conv1 = SynthesisLayer(
            out_channels,
            out_channels,
            w_dim,
            resolution,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
            **layer_kwargs,
        )
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def conv_layers(self) -> list[SynthesisLayer]:
        return [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "const",
        with_img: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``ws``: ``(B, num_conv + num_torgb, w_dim)``. ``with_img=False`` skips the RGB path."""
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(ws.dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        for layer in self.conv_layers():
            x = layer(x, next(w_iter), noise_mode=noise_mode)
        if not with_img:
            return x, None
        if img is not None:
            img = upsample_image(img, self.resample_filter)
        y = self.torgb(x, next(w_iter)).to(torch.float32)
        return x, (y if img is None else img + y)


class SynthesisNetwork(nn.Module):
    """W+ ``(B, num_ws, w_dim)`` -> image, block by block from 4x4 to ``img_resolution``."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        architecture: str = "skip",
        **block_kwargs,
    ):
        super().__init__()
        log2 = int(round(math.log2(img_resolution))) if img_resolution > 0 else 0
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise ModelError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        if architecture != "skip":
            raise ModelError(
                f"only the 'skip' synthesis architecture is supported, not {architecture!r}"
            )
        block_kwargs.pop("fp16_channels_last", None)
        # num_fp16_res selects float16 for the top blocks on CUDA; we always compute float32.
        self.num_fp16_res = num_fp16_res
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        self.channels = {
            res: min(channel_base // res, channel_max) for res in self.block_resolutions
        }
        self.num_ws = 0
        self.w_offsets: dict[int, int] = {}
        for res in self.block_resolutions:
            in_channels = self.channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(
                in_channels, self.channels[res], w_dim, res, img_channels, **block_kwargs
            )
            setattr(self, f"b{res}", block)
            self.w_offsets[res] = self.num_ws
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's toRGB

    def block(self, res: int) -> SynthesisBlock:
        if res not in self.block_resolutions:
            raise ModelError(f"no synthesis block at {res} px; blocks: {self.block_resolutions}")
        return getattr(self, f"b{res}")

    def block_ws(self, ws: torch.Tensor, res: int) -> torch.Tensor:
        """The W vectors block ``res`` reads (its toRGB shares the next block's first)."""
        block = self.block(res)
        return ws.narrow(1, self.w_offsets[res], block.num_conv + block.num_torgb)

    def conv_layers(self) -> list[tuple[int, SynthesisLayer, int]]:
        """Every 3x3 layer in order, as ``(block resolution, layer, index of its W vector)``."""
        layers = []
        for res in self.block_resolutions:
            for i, layer in enumerate(self.block(res).conv_layers()):
                layers.append((res, layer, self.w_offsets[res] + i))
        return layers

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = True, **_
    ) -> torch.Tensor:
        x = img = None
        for res in self.block_resolutions:
            x, img = self.block(res)(x, img, self.block_ws(ws, res), noise_mode=noise_mode)
        return img


class Generator(nn.Module):
    """NVIDIA's ``Generator`` layout: ``mapping`` (z -> W+) and ``synthesis`` (W+ -> image).

    Accepts both checkpoint layouts: nested ``synthesis_kwargs=dict(...)`` (stylegan2-ada)
    and flat synthesis options (stylegan3 repository, which also passes
    ``fused_modconv_default``).
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        **synthesis_kwargs,
    ):
        super().__init__()
        nested = synthesis_kwargs.pop("synthesis_kwargs", None) or {}
        synthesis_kwargs = {**nested, **synthesis_kwargs}
        synthesis_kwargs.pop("fused_modconv_default", None)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **(mapping_kwargs or {}))

    @property
    def block_resolutions(self) -> list[int]:
        return self.synthesis.block_resolutions

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        **_,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)


def to_uint8_image(img: torch.Tensor) -> np.ndarray:
    """One raw generator image ``(1, C, H, W)`` -> ``(H, W, 3)`` uint8 (gray repeated to RGB)."""
    from napari_freedrag.imaging import model_pixels_to_uint8

    x = model_pixels_to_uint8(img[0]).permute(1, 2, 0).cpu().numpy()
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return np.ascontiguousarray(x[:, :, :3])
