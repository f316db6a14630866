"""The input checks the adapters share: images in range, finite, of the right shape;
whole-number labels in range; image sizes the model takes."""

import re

import numpy as np
import pytest

from defense.adapters.checks import check_image_size, check_images, check_labels
from defense.common.errors import ParameterError
from defense.config import DefenseConfig

SHAPE = (4, 4, 3)
TINY = DefenseConfig(name="tiny", low=12, high=16, out_size=16)


def images(low: float = -1.0, high: float = 1.0, dtype: type = np.float32) -> np.ndarray:
    return np.linspace(low, high, 2 * 4 * 4 * 3).reshape(2, *SHAPE).astype(dtype)


def refused(call, message: str, parameter: str = "x") -> str:
    with pytest.raises(ParameterError, match=message) as raised:
        call()
    assert raised.value.parameters == (parameter,)
    return raised.value.message


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_images_in_range_pass(dtype):
    check_images(images(dtype=dtype), value_range=(-1, 1), shape=SHAPE, parameter="x")
    check_images(images()[0], value_range=(-1, 1), shape=SHAPE, parameter="x", batched=False)


@pytest.mark.parametrize(
    ("value_range", "low", "high", "passes"),
    [
        ((-1, 1), -1.002, 1.002, True),
        ((-1, 1), -1.0, 1.003, False),
        ((0, 1), -0.0009, 1.0, True),
        ((0, 1), -0.0011, 1.0, False),
        ((0, 255), 0.0, 255.2, True),
    ],
)
def test_the_range_has_a_rounding_tolerance_of_a_thousandth(value_range, low, high, passes):
    def call():
        check_images(images(low, high), value_range=value_range, shape=SHAPE, parameter="x")

    if passes:
        call()
    else:
        refused(call, "x must hold values in")


@pytest.mark.parametrize(
    ("value_range", "formula"),
    [((-1, 1), r"pixels / 255 \* 2 - 1"), ((0, 1), r"pixels / 255$")],
)
def test_pixel_values_get_a_hint_with_the_mapping(value_range, formula):
    message = refused(
        lambda: check_images(images(0, 255), value_range=value_range, shape=SHAPE, parameter="x"),
        r"found values in \[0, 255\], which look like \[0, 255\] pixels",
    )
    assert re.search(formula, message), message


def test_no_pixel_hint_where_the_range_is_not_a_unit_one():
    message = refused(
        lambda: check_images(images(0, 300), value_range=(0, 255), shape=SHAPE, parameter="x"),
        r"x must hold values in \[0, 255\], found values in \[0, 300\]$",
    )
    assert "pixels" not in message


def test_integer_images_are_refused_with_the_mapping():
    refused(
        lambda: check_images(
            images(0, 255, np.uint8), value_range=(0, 1), shape=SHAPE, parameter="x"
        ),
        r"x must hold floating-point values in \[0, 1\], got uint8 \(map \[0, 255\] pixels "
        r"with pixels / 255\)",
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_images_are_refused(bad):
    batch = images()
    batch[1, 2, 3, 0] = batch[0, 0, 0, 2] = bad
    refused(
        lambda: check_images(batch, value_range=(-1, 1), shape=SHAPE, parameter="images"),
        "images must be finite, found 2 NaN or infinite values",
        "images",
    )


@pytest.mark.parametrize(
    ("shape", "batched", "message"),
    [
        (
            (2, 3, 4, 4),
            True,
            r"\[N, 4, 4, 3\], got shape \(2, 3, 4, 4\): channels first, .*"
            r"axes \(0, 2, 3, 1\)",
        ),
        (
            (3, 4, 4),
            False,
            r"one image of shape \[4, 4, 3\], got shape \(3, 4, 4\): channels "
            r"first, .*axes \(1, 2, 0\)",
        ),
        ((2, 4, 4, 1), True, "got shape .*: one channel, repeat"),
        ((2, 5, 4, 3), True, r"got shape \(2, 5, 4, 3\)$"),
        ((4, 4, 3), True, r"got shape \(4, 4, 3\)$"),
        ((1, 4, 4, 3), False, r"one image of shape \[4, 4, 3\], got shape \(1, 4, 4, 3\)$"),
        ((0, 4, 4, 3), True, "x must hold at least one image, got none"),
    ],
)
def test_other_shapes_are_refused(shape, batched, message):
    refused(
        lambda: check_images(
            np.zeros(shape, np.float32),
            value_range=(0, 1),
            shape=SHAPE,
            parameter="x",
            batched=batched,
        ),
        message,
    )


@pytest.mark.parametrize(
    "labels", [[0, 9, 3], np.array([0, 9, 3], np.uint8), np.array([0.0, 9.0, 3.0])]
)
def test_whole_number_labels_come_back_as_int64(labels):
    found = check_labels(labels, count=3, classes=10, parameter="y")
    assert found.dtype == np.int64
    np.testing.assert_array_equal(found, [0, 9, 3])


def test_one_hot_rows_come_back_as_their_argmax_only_where_allowed():
    rows = np.eye(10)[[2, 7]] * 0.9
    np.testing.assert_array_equal(
        check_labels(rows, count=2, classes=10, parameter="y", one_hot=True), [2, 7]
    )
    refused(
        lambda: check_labels(rows, count=2, classes=10, parameter="y"),
        r"y must be index labels of shape \[2\], one per image, got shape \(2, 10\)",
        "y",
    )


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 2.5, 3], "y must be whole-number labels, found 2.5"),
        ([0, 10, 3], r"y must be labels in \[0, 9\], found 10"),
        ([0, -2, 3], r"y must be labels in \[0, 9\], found -2"),
        ([0, np.nan, 3], "y must be finite, found 1 NaN or infinite values"),
        ([True, False, True], "y must hold numbers, got bool"),
        (
            3,
            r"index labels of shape \[3\] or one-hot labels of shape \[3, 10\], one per image, "
            r"got shape \(\)",
        ),
        ([[1], [2], [3]], r"got shape \(3, 1\)"),
    ],
)
def test_bad_labels_are_refused(labels, message):
    refused(
        lambda: check_labels(labels, count=3, classes=10, parameter="y", one_hot=True),
        message,
        "y",
    )


class FixedModel:
    """What check_image_size reads of a Keras model: its input shape."""

    def __init__(self, height: int | None, width: int | None):
        self.input_shape = (None, height, width, 3)


def test_image_sizes_must_give_the_models_input_size():
    for model in (FixedModel(16, 16), FixedModel(None, None)):
        check_image_size(model, TINY, 12, 12, given="image_size=12", parameter="image_size")
    check_image_size(
        FixedModel(12, 10), TINY.replace(randomize=False), 12, 10, given="g", parameter="p"
    )
    refused(
        lambda: check_image_size(
            FixedModel(16, 16),
            TINY.replace(randomize=False),
            12,
            16,
            given="shape (12, 16, 3)",
            parameter="dataset",
        ),
        r"shape \(12, 16, 3\) gives the model 12x16 inputs under config 'tiny', but it takes "
        "16x16",
        "dataset",
    )
