"""NVIDIA's StyleGAN2 discriminator ("resnet" architecture) in plain PyTorch, for projection.

Written from the published architecture so that the ``D`` of a stylegan2-ada-pytorch
training snapshot loads under its own ``state_dict`` names. Projection only reads the
activations of its blocks as an offline perceptual feature space (the realness logit is
computed too, for completeness): no LPIPS backbone, no download.

Down-sampling follows NVIDIA's ``conv2d_resample``: the [1, 3, 3, 1] filter with the
padding of a stride-2 convolution, then the strided convolution (1x1 skips: filter and
keep every second pixel).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from napari_freedrag.errors import ModelError
from napari_freedrag.models.stylegan2.network import bias_act, fir_filter, make_resample_filter


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution, optionally halving the resolution."""

    def __init__(self, in_channels, out_channels, kernel_size, *, bias=True, activation="linear",
                 down=1, conv_clamp=None):  # fmt: skip
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        )
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        if down > 1:
            self.register_buffer("resample_filter", make_resample_filter())

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        if self.down > 1:
            taps = self.resample_filter.shape[0]
            lead = self.padding + (taps - self.down + 1) // 2
            trail = self.padding + (taps - self.down) // 2
            x = fir_filter(F.pad(x, [lead, trail, lead, trail]), self.resample_filter, 1.0)
            if weight.shape[-1] == 1:
                x = F.conv2d(x[:, :, :: self.down, :: self.down], weight)
            else:
                x = F.conv2d(x, weight, stride=self.down)
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        gain_total = (math.sqrt(2.0) if self.activation == "lrelu" else 1.0) * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain=gain_total, clamp=clamp)


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate dense layer (the epilogue's fc and out)."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear"):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]))
        self.bias = nn.Parameter(torch.zeros([out_features]))
        self.weight_gain = 1 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(F.linear(x, self.weight * self.weight_gain), self.bias, self.activation)


class DiscriminatorBlock(nn.Module):
    """fromRGB (first block only), conv0, down-sampling conv1, plus a down-sampling 1x1 skip."""

    def __init__(self, in_channels, tmp_channels, out_channels, img_channels, conv_clamp=None):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu",
                                       conv_clamp=conv_clamp)  # fmt: skip
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu",
                                 conv_clamp=conv_clamp)  # fmt: skip
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                                 conv_clamp=conv_clamp)  # fmt: skip
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        return y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class DiscriminatorEpilogue(nn.Module):
    """Minibatch standard deviation, 3x3 conv, fc, realness logit (unconditional)."""

    def __init__(self, channels, mbstd_group_size=4, mbstd_num_channels=1, conv_clamp=None):
        super().__init__()
        self.group_size, self.num_channels = mbstd_group_size, mbstd_num_channels
        self.conv = Conv2dLayer(channels + mbstd_num_channels, channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)  # fmt: skip
        self.fc = FullyConnectedLayer(channels * 16, channels, activation="lrelu")
        self.out = FullyConnectedLayer(channels, 1)

    def minibatch_std(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = min(self.group_size, n) if self.group_size else n
        f = self.num_channels
        y = x.reshape(group, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)
        return torch.cat([x, y.repeat(group, 1, h, w)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.minibatch_std(x) if self.num_channels else x)
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """Image ``(N, C, R, R)`` in ``[-1, 1]`` -> block activations and a realness logit."""

    def __init__(
        self,
        c_dim: int = 0,
        img_resolution: int = 256,
        img_channels: int = 3,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        epilogue_kwargs: dict | None = None,
        **_speed_only,
    ):
        """NVIDIA's constructor arguments; ``num_fp16_res``, ``cmap_dim`` (unconditional) and
        ``block_kwargs``/``mapping_kwargs`` change nothing a float32 unconditional D computes."""
        super().__init__()
        if c_dim:
            raise ModelError("conditional discriminators are not supported for projection")
        if architecture != "resnet":
            raise ModelError(f"only the 'resnet' discriminator is supported, not {architecture!r}")
        log2 = int(round(math.log2(img_resolution)))
        if img_resolution < 8 or 2**log2 != img_resolution:
            raise ModelError(f"discriminator img_resolution {img_resolution} is not a power of two")
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]

        def channels(res: int) -> int:
            return min(channel_base // res, channel_max)

        for res in self.block_resolutions:
            in_channels = channels(res) if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels(res), channels(res // 2),
                                       img_channels, conv_clamp)  # fmt: skip
            setattr(self, f"b{res}", block)
        epilogue = {k: v for k, v in (epilogue_kwargs or {}).items() if k.startswith("mbstd_")}
        self.b4 = DiscriminatorEpilogue(channels(4), conv_clamp=conv_clamp, **epilogue)

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """The output of every block, from the image's resolution down to 8x8 -> 4x4."""
        x, out = None, []
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
            out.append(x)
        return out

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.b4(self.features(img)[-1])


def build_discriminator(init_kwargs: dict, state_dict: dict[str, torch.Tensor], source: str):
    """An eval-mode, frozen :class:`Discriminator` holding exactly ``state_dict``."""
    kwargs = dict(init_kwargs)
    for key in ("synthesis_kwargs", "fused_modconv_default"):
        kwargs.pop(key, None)
    try:
        discriminator = Discriminator(**kwargs)
    except TypeError as exc:
        raise ModelError(f"{source}: discriminator options not implemented here ({exc})") from None
    try:
        discriminator.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"{source}: the discriminator weights do not fit its config ("
            f"{str(exc).splitlines()[0]})"
        ) from None
    return discriminator.eval().requires_grad_(False)


def load_discriminator(path: str | Path | None) -> Discriminator | None:
    """The ``D`` of an NVIDIA training snapshot, or ``None`` when the file carries none.

    Reads the pickle with the same restricted unpickler as the generator: no code runs.
    """
    from napari_freedrag.models.stylegan2 import checkpoint

    if path is None:
        return None
    path = Path(path)
    if path.suffix.lower() != ".pkl" or not path.is_file():
        return None
    state, kwargs = checkpoint.network_record(path, "D")
    if state is None:
        return None
    return build_discriminator(kwargs, state, path.name)
