"""User images of any kind go to model RGB and come back in their own shape, dtype and range."""

from __future__ import annotations

import numpy as np
import pytest

from napari_freedrag import imaging
from napari_freedrag.errors import InputError


def _gradient(shape, dtype, high):
    rows = np.linspace(0, 1, shape[0])[:, None] * np.linspace(0.2, 1, shape[1])[None, :]
    if len(shape) == 3:  # each channel its own ramp
        rows = rows[..., None] * np.linspace(1.0, 0.5, shape[2])
    return (rows * high).astype(dtype)


@pytest.mark.parametrize(
    ("shape", "dtype", "high"),
    [
        ((37, 53), np.uint16, 4095),  # 12-bit camera data in uint16
        ((20, 30, 1), np.float32, 3.5),  # single-channel float with an axis
        ((16, 24, 3), np.uint8, 255),
        ((24, 16), np.float64, 1.0),
    ],
)
def test_round_trip_keeps_shape_dtype_and_values(shape, dtype, high):
    image = _gradient(shape, dtype, high)
    rgb, source = imaging.to_model_rgb(image)
    assert rgb.shape == shape[:2] + (3,) and rgb.dtype == np.uint8
    back = imaging.from_model_rgb(rgb, source)
    assert back.shape == image.shape and back.dtype == image.dtype
    low, top = source.value_range
    quantum = (top - low) / 255
    assert np.abs(back.astype(np.float64) - image).max() <= quantum / 2 + 1e-6


def test_uint16_uses_the_data_range_not_65535():
    image = np.array([[100, 200], [300, 400]], dtype=np.uint16)
    rgb, source = imaging.to_model_rgb(image)
    assert source.value_range == (100.0, 400.0)
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255


def test_contrast_limits_are_the_value_range_and_clip():
    image = np.array([[0, 50], [100, 1000]], dtype=np.uint16)
    rgb, source = imaging.to_model_rgb(image, value_range=(0, 100))
    assert rgb[1, 1, 0] == 255 and rgb[0, 1, 0] == 128
    assert imaging.from_model_rgb(rgb, source)[1, 1] == 100


def test_rgba_keeps_its_alpha_and_gray_results_average_channels():
    image = np.zeros((8, 10, 4), np.uint8)
    image[..., 0], image[..., 3] = 200, np.arange(10, dtype=np.uint8)[None, :] * 20
    rgb, source = imaging.to_model_rgb(image)
    assert (rgb[..., 0] == 200).all() and source.channels == "rgba"
    back = imaging.from_model_rgb(rgb, source)
    np.testing.assert_array_equal(back, image)

    gray = np.full((4, 4), 90, np.uint8)
    _, gray_source = imaging.to_model_rgb(gray)
    edited = np.zeros((4, 4, 3), np.uint8)
    edited[..., 0] = 30  # an edit that tinted the image red
    assert (imaging.from_model_rgb(edited, gray_source) == 10).all()


def test_results_at_another_size_are_resized_back():
    image = _gradient((30, 45), np.uint16, 1000)
    _, source = imaging.to_model_rgb(image)
    back = imaging.from_model_rgb(np.zeros((64, 96, 3), np.uint8), source)
    assert back.shape == (30, 45)


def test_bad_images_get_one_clear_message():
    with pytest.raises(InputError, match="2D slice"):
        imaging.to_model_rgb(np.zeros((5, 16, 16)))
    with pytest.raises(InputError, match="empty"):
        imaging.to_model_rgb(np.zeros((0, 16)))
    with pytest.raises(InputError, match="low < high"):
        imaging.to_model_rgb(np.zeros((4, 4)), value_range=(5, 5))


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((512, 512), (512, 512)),
        ((300, 500), (304, 512)),
        ((1000, 250), (512, 128)),
        ((5, 3), (512, 304)),
    ],
)
def test_working_size_keeps_aspect_with_longer_side_native(size, expected):
    assert imaging.working_size(size, 512) == expected


def test_the_displayed_slice_of_a_stack_is_edited_in_a_copy():
    stack = np.arange(3 * 4 * 5 * 6, dtype=np.uint16).reshape(3, 4, 5, 6)  # (T, Z, Y, X)
    index = imaging.slice_index(stack.shape, current_step=(2, 1, 0, 0))
    assert index == (2, 1)
    plane = imaging.take_slice(stack, index)
    np.testing.assert_array_equal(plane, stack[2, 1])
    edited = imaging.put_slice(stack, index, np.zeros_like(plane))
    assert (edited[2, 1] == 0).all() and stack[2, 1].any()  # the user's array is untouched
    assert (edited[0] == stack[0]).all()

    rgb_stack = np.zeros((7, 5, 6, 3), np.uint8)
    # the viewer has one more axis than the layer; steps beyond the stack are clamped
    assert imaging.slice_index(rgb_stack.shape, (0, 9, 0, 0), rgb=True) == (6,)
    assert imaging.slice_index((5, 6), (3, 3)) == ()
    with pytest.raises(InputError, match="shape"):
        imaging.put_slice(stack, index, np.zeros((2, 2)))


def test_model_pixels_become_uint8_the_nvidia_way_for_tensors_and_arrays():
    import torch

    from napari_freedrag.imaging import model_pixels_to_uint8

    values = [-2.0, -1.0, -0.5, 0.0, 0.002, 0.5, 1.0, 3.0]
    expected = [0, 0, 64, 128, 128, 191, 255, 255]  # x * 127.5 + 128, clamped, truncated
    as_tensor = model_pixels_to_uint8(torch.tensor(values))
    assert as_tensor.dtype == torch.uint8 and as_tensor.tolist() == expected
    as_array = model_pixels_to_uint8(np.array(values))
    assert as_array.dtype == np.uint8 and as_array.tolist() == expected
