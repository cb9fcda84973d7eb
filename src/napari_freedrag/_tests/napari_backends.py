"""Fast stand-in models for the napari tests: the analytic blobs, able to 'invert' a layer.

The analytic renderer cannot reconstruct a photograph; its ``invert`` starts from a
fixed blob layout at the source's size, which is all the viewer tests need: they check
what happens to a user's layers, planes, dtypes and files, not picture quality.
"""

from __future__ import annotations

from napari_freedrag.models.analytic import AnalyticBackend

#: Blob centres (row, col) of the start image for a 64 px model.
CENTRES = ((20.0, 20.0), (44.0, 40.0), (20.0, 46.0))


class InvertingAnalytic(AnalyticBackend):
    """The analytic backend plus ``invert``, so it can edit a user's image layer."""

    def __init__(self, size: int = 64, **kwargs):
        super().__init__(size=size, name="analytic-invert", **kwargs)
        self.inverted = []  # the model RGB images it was given

    def invert(self, rgb, prompt: str = "", lora_steps: int = 0):
        if rgb.shape[:2] != (self.size, self.size):
            raise ValueError(f"test model needs a {self.size}px source, got {rgb.shape}")
        self.inverted.append(rgb)
        scale = self.size / 64
        state = self.from_centres([(r * scale, c * scale) for r, c in CENTRES])
        state.info["source"] = {"shape": list(rgb.shape)}
        return state
