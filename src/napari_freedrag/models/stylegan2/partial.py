"""The one partial-synthesis path: the parts of a StyleGAN2 synthesis network a drag runs.

NVIDIA's forward (:mod:`.network`) turns a whole W+ into a whole image. A drag needs
other cuts of the same computation, and they all live here:

* :func:`run_blocks`: a range of blocks, optionally from given lower-block outputs (the
  feature block's raw output and its skip image, the image from them). Renders run it
  with no gradient, channels-last and in place, which roughly halves their time on CPU;
* :class:`FeaturePath`: the layers up to the feature block for one edit, with the
  frozen styles' demodulated weights cached outside autograd, over the whole map or
  only over the receptive field of a few regions (values identical to the full map);
  its large maps' activations keep booleans, not float maps, for the backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from napari_freedrag.models.stylegan2.network import (
    LRELU_GAIN,
    LRELU_SLOPE,
    SynthesisLayer,
    SynthesisNetwork,
)

#: ``(r0, r1, c0, c1)``: rows ``r0:r1`` and columns ``c0:c1`` (end-exclusive).
Rect = tuple[int, int, int, int]


def run_blocks(
    synthesis: SynthesisNetwork,
    ws: torch.Tensor,
    *,
    after: int | None = None,
    until: int | None = None,
    x: torch.Tensor | None = None,
    img: torch.Tensor | None = None,
    noise_mode: str = "const",
    with_img: bool = True,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The blocks after ``after`` (whose raw ``x, img`` outputs are given) up to and
    including ``until``; returns that block's raw ``(x, img)``.

    ``channels_last`` stores the activations channel-minor, which the CPU convolutions
    and the depthwise FIR filter read much faster at high resolutions (same values up
    to float rounding).
    """
    until = synthesis.img_resolution if until is None else until
    synthesis.block(until)
    if after is not None:
        synthesis.block(after)
    for res in synthesis.block_resolutions:
        if after is not None and res <= after:
            continue
        if res > until:
            break
        if channels_last and x is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        x, img = synthesis.block(res)(
            x, img, synthesis.block_ws(ws, res), noise_mode=noise_mode, with_img=with_img
        )
    return x, img


def input_rect(out_rect: Rect, up: int) -> Rect:
    """The input region (unclipped: may reach outside the map) a 3x3 layer reads for ``out_rect``.

    ``up == 1``: plain 3x3 convolution with padding 1. ``up == 2``: output ``o`` reads the
    transposed-convolution output ``t`` in ``o-1 .. o+2``, which reads inputs
    ``ceil((t-2)/2) .. floor(t/2)``.
    """
    r0, r1, c0, c1 = out_rect
    if up == 1:
        return (r0 - 1, r1 + 1, c0 - 1, c1 + 1)
    return (-((3 - r0) // 2), (r1 + 1) // 2 + 1, -((3 - c0) // 2), (c1 + 1) // 2 + 1)


def clip_rect(rect: Rect, size: int) -> Rect:
    r0, r1, c0, c1 = rect
    return (max(r0, 0), min(r1, size), max(c0, 0), min(c1, size))


def _pads(have: Rect, want: Rect) -> tuple[int, int, int, int]:
    """Zero rows/cols to add (negative: to crop) so that a map covering ``have`` covers ``want``."""
    return (have[0] - want[0], want[1] - have[1], have[2] - want[2], want[3] - have[3])


class FeaturePath:
    """The layers up to the feature block for one edit from a fixed start W+.

    The W+ vectors from ``n_trainable`` on are frozen: their layers get their
    demodulated weights once, outside autograd (their backward computes input
    gradients only). The trainable layers scale activations by their styles, so they
    need no per-step weight copies either.
    """

    def __init__(
        self, synthesis: SynthesisNetwork, ws: torch.Tensor, n_trainable: int, feature_res: int
    ):
        self.synthesis = synthesis
        self.layers = [
            (layer, w_index)
            for block_res, layer, w_index in synthesis.conv_layers()
            if block_res <= feature_res
        ]
        with torch.no_grad():
            self._frozen = {
                w_index: layer.conv_layout(layer.modulated_weight(ws[:, w_index]))
                for layer, w_index in self.layers
                if w_index >= n_trainable
            }
            self._shared = {
                w_index: (layer.conv_layout(layer.weight), layer.weight_sq())
                for layer, w_index in self.layers
                if w_index < n_trainable
            }

    def __call__(self, latent: torch.Tensor, regions: list[Rect | None]) -> list[torch.Tensor]:
        """The feature block's raw output over each region (``None``: the full map).

        Layers whose needed output is the whole map run once, shared by all regions;
        from the first layer where some region needs less, each region runs on its own
        receptive field.
        """
        plans = [self._plan(region) for region in regions]
        first_partial = min(
            (next((k for k, rect in enumerate(plan) if rect is not None), len(plan))
             for plan in plans),
            default=len(self.layers),
        )  # fmt: skip
        x = self.synthesis.b4.const.unsqueeze(0)
        for layer, w_index in self.layers[:first_partial]:
            x = self._apply(layer, w_index, latent, x, None, None)
        tiles = []
        for plan in plans:
            tile, have = x, None
            for (layer, w_index), out_rect in list(zip(self.layers, plan, strict=True))[
                first_partial:
            ]:
                tile = self._apply(layer, w_index, latent, tile, have, out_rect)
                have = out_rect
            tiles.append(tile)
        return tiles

    def _apply(
        self,
        layer: SynthesisLayer,
        w_index: int,
        latent: torch.Tensor,
        x: torch.Tensor,
        in_rect: Rect | None,
        out_rect: Rect | None,
    ) -> torch.Tensor:
        """One layer over ``out_rect`` (``None``: the whole map) from ``x`` covering ``in_rect``."""
        size = layer.resolution
        padding, crop = 1, None
        if out_rect is not None:
            n_in = size // layer.up
            have = (0, n_in, 0, n_in) if in_rect is None else in_rect
            want = input_rect(out_rect, layer.up)
            top, bottom, left, right = _pads(have, want)
            if layer.up == 1 and top == bottom >= 0 and left == right >= 0:
                padding = (top, left)  # let the convolution pad: saves a copy of the input
            else:
                padding = 0
                if top or bottom or left or right:
                    x = F.pad(x, [left, right, top, bottom])
                if layer.up == 2:  # the "valid" up-sampling starts on even output pixels
                    r0, r1, c0, c1 = out_rect
                    crop = (slice(r0 % 2, r0 % 2 + r1 - r0), slice(c0 % 2, c0 % 2 + c1 - c0))
        frozen = self._frozen.get(w_index)
        if frozen is not None:
            y = layer.grouped_conv(x, frozen, padding)
        else:
            shared_weight, weight_sq = self._shared[w_index]
            y = layer.styled_conv(x, latent[:, w_index], padding, shared_weight, weight_sq)
        if crop is not None:
            y = y[(slice(None), slice(None), *crop)]
        r0, r1, c0, c1 = (0, size, 0, size) if out_rect is None else out_rect
        return _activate(layer, y, layer.noise("const", 1, y, (slice(r0, r1), slice(c0, c1))))

    def _plan(self, region: Rect | None) -> list[Rect | None]:
        """Per layer, the output rectangle to compute (``None``: the whole map)."""
        plan: list[Rect | None] = [None] * len(self.layers)
        rect = region
        for k in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[k][0]
            size = layer.resolution
            if rect is None or rect == (0, size, 0, size):
                break
            plan[k] = rect
            rect = clip_rect(input_rect(rect, layer.up), size // layer.up)
        return plan


#: Maps from this many elements on (the 64 and 128 px blocks' whole maps) go through
#: :class:`_LeanActivation` when a gradient is recorded; on the small tiles of a boxed
#: step its few extra calls cost more than the memory it saves.
LEAN_ACTIVATION_NUMEL = 2**20


def _activate(layer: SynthesisLayer, y: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """``layer.activate``; for a large map whose gradient is recorded, through
    :class:`_LeanActivation` (same values, forward and backward) when only ``y`` needs one."""
    frozen = not layer.bias.requires_grad and (noise is None or not noise.requires_grad)
    recorded = torch.is_grad_enabled() and y.requires_grad
    lean = recorded and frozen and y.numel() >= LEAN_ACTIVATION_NUMEL
    if not lean or layer.activation != "lrelu":
        return layer.activate(y, noise)
    return _LeanActivation.apply(y, noise, layer.bias.to(y.dtype), layer.conv_clamp)


class _LeanActivation(torch.autograd.Function):
    """A synthesis layer's noise, bias, leaky ReLU, gain and clamp, as
    :meth:`SynthesisLayer.activate` computes them, whose backward keeps one boolean per
    element (where the leaky ReLU's input was positive; a second only when the clamp cut
    something) instead of the two float maps autograd keeps (the leaky ReLU's and the
    clamp's inputs). A masked drag differentiates whole 64 and 128 px maps, and those maps
    were a third of its memory. The backward runs autograd's steps in autograd's order
    (clamp, gain, leaky ReLU), so the gradients have the same values; it is first-order
    only (a drag needs no more)."""

    @staticmethod
    def forward(ctx, y, noise, bias, clamp):
        x = y + noise if noise is not None else y.clone()
        x.add_(bias.reshape(1, -1, 1, 1))
        positive = x > 0
        x = F.leaky_relu_(x, LRELU_SLOPE).mul_(LRELU_GAIN)
        inside = None
        if clamp is not None and clamp >= 0:
            low, high = torch.aminmax(x)
            if bool(low < -clamp) or bool(high > clamp):  # most maps stay within it
                inside = x.abs() <= clamp
                x.clamp_(-clamp, clamp)
        ctx.save_for_backward(positive, inside)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        positive, inside = ctx.saved_tensors
        if inside is not None:
            grad = grad * inside  # autograd writes +0 where this writes -0: the same value
        grad = grad * LRELU_GAIN
        # The slope where the input was not positive: leaky ReLU's own backward, told the
        # sign by a 1/0 map (boolean selects run several times slower on CPU).
        grad = torch.ops.aten.leaky_relu_backward(grad, positive.to(grad.dtype), LRELU_SLOPE, False)
        return grad, None, None, None
