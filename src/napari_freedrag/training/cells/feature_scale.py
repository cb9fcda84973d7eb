"""Give the cells generator's drag features the scale FreeDrag's StyleGAN2 preset expects.

FreeDrag's thresholds (``l = 0.3``, exit and done at ``0.25 l``) are absolute values of the
mean absolute patch discrepancy, tuned on published StyleGAN2 models. A small model
trained briefly can end with much smaller activations (ours: a patch moved by two
feature pixels differs by ~0.003), and then every loss is "already below threshold": the
points jump to their targets while the image does not change.

StyleGAN2's synthesis network is exactly scale-equivariant in its activations: the
demodulated convolutions are linear in their input and their weights are normalised, the
leaky ReLU is positively homogeneous, so multiplying the constant input, every layer's
bias and noise strength by ``c`` multiplies every feature map by ``c``; dividing the
toRGB weights by ``c`` then leaves the image unchanged (to float rounding). At export we
pick ``c`` so that, at segmented cell centroids, a patch (the preset's) moved by
``SHIFT_FEATURE_PX`` feature pixels differs from the original by the preset's ``l``.

Why half a pixel: ``c`` only sets how strict FreeDrag's absolute thresholds are, and too
lenient a scale lets the line search walk the handle to its target while the cell lags
behind (the optimisation exits as soon as the loss is under ``0.25 l``). The shift was
chosen on 36 move instructions planned from other seeds than the benchmark's
(docs/cells-model.md, "Feature scale"): FreeDrag brought the cell within 2 px in 8 % of
them at the former 2-pixel rule, 25 % at twice that ``c``, 42 % at four times (this
rule: 3.5-3.7 times) and 39 % at eight times, with more steps per drag the stricter.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_freedrag.cellseg import segment_cells
from napari_freedrag.engine.patches import discrepancy, patch_features, patch_offsets
from napari_freedrag.models.stylegan2.network import SynthesisLayer, ToRGBLayer

SHIFT_FEATURE_PX = 0.5


@torch.no_grad()
def rescale_activations(G, c: float) -> None:
    """Multiply every synthesis feature map by ``c`` without changing the image."""
    if not c > 0:
        raise ValueError(f"activation scale must be positive, not {c}")
    G.synthesis.b4.const.mul_(c)
    for module in G.synthesis.modules():
        if isinstance(module, SynthesisLayer):
            module.bias.mul_(c)
            if module.use_noise:
                module.noise_strength.mul_(c)
        elif isinstance(module, ToRGBLayer):
            module.weight.div_(c)


@torch.no_grad()
def shift_discrepancy(G, count: int = 16, shift: float | None = None) -> float:
    """Median patch discrepancy between a cell centroid and points ``shift`` feature px away
    (default: the calibration rule's :data:`SHIFT_FEATURE_PX`)."""
    shift = SHIFT_FEATURE_PX if shift is None else shift
    from napari_freedrag.models.stylegan2.backend import StyleGAN2Backend

    backend = StyleGAN2Backend(G, "calibration", "cpu")
    params = backend.preset("freedrag")
    values = []
    for seed in range(count):
        start = backend.sample(seed)
        session = backend.session(start, None, "freedrag")
        features = session.features(session.latent).double()
        scale = torch.tensor(session.feature_scale, dtype=torch.float64)
        unit = scale if params.patch_units == "image" else torch.ones(2, dtype=torch.float64)
        radius = params.patch_radius * unit
        offsets = patch_offsets(params.patch_grid, tuple(radius.tolist()))
        centres = [region.centroid for region in segment_cells(start.image)]
        if not centres:  # an untrained model draws no cells: measure on a coarse grid
            size = np.asarray(start.image.shape[:2])
            centres = [size * (i, j) / 4 for i in (1, 2, 3) for j in (1, 2, 3)]
        for centroid in centres:
            centre = torch.tensor(centroid, dtype=torch.float64) * scale
            template = patch_features(features, centre, offsets)
            for step in ((shift, 0.0), (-shift, 0.0), (0.0, shift), (0.0, -shift)):
                moved = patch_features(features, centre + torch.tensor(step), offsets)
                values.append(discrepancy(moved, template).item())
    return float(np.median(values))


def preset_l(G) -> float:
    """FreeDrag's ``l`` in the preset a backend of ``G`` drags with: the calibration target."""
    from napari_freedrag.models.stylegan2.backend import StyleGAN2Backend

    return float(StyleGAN2Backend(G, "calibration", "cpu").preset("freedrag").l)


def calibrate(G, target: float | None = None, count: int = 16) -> float:
    """Rescale ``G`` in place so that :func:`shift_discrepancy` is ``target`` (default: the
    preset's ``l``); returns c."""
    c = (preset_l(G) if target is None else target) / shift_discrepancy(G, count)
    rescale_activations(G, c)
    return c
