"""A real-image edit in napari: the shown slice of a uint16 stack, through the widget's runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.napari
napari = pytest.importorskip("napari")
pytest.importorskip("diffusers")

from napari_freedrag._tests.ldm_tiny import build_tiny_pipeline  # noqa: E402

Z, H, W = 3, 40, 56


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FREEDRAG_HOME", str(tmp_path / "home"))


def test_the_shown_slice_of_a_stack_is_inverted_and_dragged(make_napari_viewer, tmp_path):
    from napari_freedrag.imaging import to_model_rgb
    from napari_freedrag.models.ldm import load_ldm
    from napari_freedrag.napari.runner import controller_for

    gen = load_ldm(str(build_tiny_pipeline(tmp_path / "tiny-sd")), "cpu", num_inference_steps=10)
    rows, cols = np.mgrid[:H, :W]
    stack = np.stack(
        [
            (300 + 1000 * z * np.exp(-((rows - 20) ** 2 + (cols - 8 - 10 * z) ** 2) / 50.0))
            for z in range(Z)
        ]
    ).astype(np.uint16)
    original = stack.copy()
    viewer = make_napari_viewer()
    layer = viewer.add_image(stack, name="cells", scale=(2.0, 0.5, 0.5))
    viewer.dims.set_current_step(0, 2)  # the user looks at the last plane

    controller = controller_for(viewer)
    controller.new_image(gen, source=layer, wait=True)
    record = controller.history[0]
    assert record.state.info["source"]["shape"][:2] == [H, W]
    # the inverted image is the plane on screen, over its full value range

    def inverted(plane: int):
        return gen.invert(to_model_rgb(stack[plane])[0]).latent

    torch.testing.assert_close(record.state.latent, inverted(2))
    assert not torch.allclose(record.state.latent, inverted(0))

    result = controller.run(
        handles=[[20, 28]], targets=[[20, 36]], mask=None, max_steps=2, wait=True
    )
    assert result.image.shape == (H, W, 3) and 1 <= result.steps <= 2
    assert len(controller.history) == 2  # the start and the edit
    working = controller.layers.working
    assert working.data.shape == (1, H, W) and working.data.dtype == np.uint16
    np.testing.assert_array_equal(layer.data, original)  # the user's layer is never written
